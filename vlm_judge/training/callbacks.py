"""The judge's evaluation during training: p_defect of every eval image through the shared scorer
(modeling.score_images, the protocol's Yes/No rule), then ROC-AUC / accuracy / Brier / per-defect ROC-AUC
(vlm_judge.metrics.judge_metrics, the same functions eval.compare reports).

The metrics are added to the dict Trainer.evaluate returns, so `metric_for_best_model: roc_auc` with
`load_best_model_at_end` keeps the best checkpoint by AUC, and they are logged like any eval metric (MLflow,
progress bar, trainer_state.json).
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

from vlm_judge.metrics import judge_metrics
from vlm_judge.modeling import score_images
from vlm_judge.protocol import JudgePrompt, load_prompt

logger = logging.getLogger(__name__)


def score_split(
    model: Any, processor: Any, dataset: Any, *, prompt: JudgePrompt | None = None, batch_size: int = 8
) -> dict[str, float]:
    """judge_metrics of a load_judge_dataset split (images read from image_path, like the serving client)."""
    scores = score_images(model, processor, list(dataset["image_path"]), prompt=prompt, batch_size=batch_size)
    columns = dataset.column_names
    return judge_metrics(
        dataset["label"],
        scores,
        defects=dataset["defect"] if "defect" in columns else None,
        soft_labels=dataset["soft_label"] if "soft_label" in columns else None,
    )


class JudgeEvalCallback(TrainerCallback):
    """On every evaluation: score `dataset`, add eval_roc_auc/eval_accuracy/eval_brier/... to the metrics."""

    def __init__(
        self,
        dataset: Any,
        *,
        prompt: JudgePrompt | None = None,
        batch_size: int = 8,
        metric_key_prefix: str = "eval",
    ) -> None:
        self.dataset = dataset
        self.prompt = prompt or load_prompt()
        self.batch_size = batch_size
        self.prefix = metric_key_prefix
        self.trainer: Any = None  # set by attach(): the callback logs through trainer.log
        self.history: list[dict[str, float]] = []

    def attach(self, trainer: Any) -> JudgeEvalCallback:
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    def on_evaluate(self, args, state, control, metrics=None, model=None, processing_class=None, **kwargs):
        # Every rank scores (FSDP/ZeRO-3 need all ranks in each forward); the results are identical.
        result = score_split(
            model, processing_class, self.dataset, prompt=self.prompt, batch_size=self.batch_size
        )
        prefixed = {f"{self.prefix}_{key}": value for key, value in result.items()}
        if metrics is not None:
            metrics.update(prefixed)  # Trainer picks the best checkpoint from this dict
        self.history.append({"step": state.global_step, **prefixed})
        if self.trainer is not None:
            self.trainer.log(prefixed)
        logger.info("step %d: %s", state.global_step, {k: round(v, 4) for k, v in prefixed.items()})
        return control
