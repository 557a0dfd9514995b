"""The judge's evaluation inside Trainer's own eval loop: every evaluated row is scored once, by the forward pass
that also gives eval_loss.

- JudgeDataCollator adds each row's ground truth as tensors (EVAL_TRUTH: the loss target, the hard label, the
  vote share, the defect type as an index into the collator's `defect_types`).
- JudgeSFTTrainer.prediction_step hands Trainer each row's answer-position logits and that truth. Tensors are
  the one mechanism that survives Trainer's eval loop as it is (padding across processes, gather_for_metrics,
  concatenation) and needs no assumption about row order; `include_for_metrics` only carries input ids, and a
  defect type is a string, hence the index.
- JudgeSFTTrainer.answer_scores (preprocess_logits_for_metrics) reduces each batch's [rows, vocab] logits at once
  to three numbers per row: p_defect by the protocol's Yes/No rule (protocol.p_defect_from_logits, as
  modeling.score_images and the served judge read it), the answer loss and the Yes/No mass; then the few logits of
  the answer words' variants, which the temperature fit reads. Full logits are never accumulated over the split.
- JudgeMetrics (compute_metrics) turns the split's scores into vlm_judge.metrics.judge_metrics (roc_auc,
  accuracy, brier, rmse_soft, roc_auc_<type>, ...) plus the answer loss and mass.

Trainer prefixes the result: eval_* for the validation split during training (what `metric_for_best_model:
roc_auc` reads), test_* for recipes/sft.py's final `trainer.evaluate(test, metric_key_prefix="test")`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vlm_judge.metrics import judge_metrics

# Batch keys of the per-row ground truth, in the order prediction_step returns them as Trainer's "labels".
EVAL_TRUTH = ("judge_targets", "judge_labels", "judge_soft_labels", "judge_defects")
# answer_scores' leading columns per row: p_defect, answer loss, Yes/No mass (the answer words' logits follow).
SCORE_COLUMNS = 3
UNTYPED = -1  # judge_defects of a row whose defect type is not among the collator's defect_types


def defect_types_of(splits: Any) -> tuple[str, ...]:
    """Every defect type (the `defect` column, clean included) of a DatasetDict's splits, sorted."""
    found: set[str] = set()
    for split in splits.values():
        if "defect" in split.column_names:
            found.update(str(value) for value in split.unique("defect"))
    return tuple(sorted(found))


@dataclass(frozen=True)
class JudgeMetrics:
    """compute_metrics of a JudgeSFTTrainer: EvalPrediction(predictions = answer_scores rows, label_ids = the
    EVAL_TRUTH arrays) -> judge_metrics of the split, plus answer_loss and answer_mass."""

    defect_types: tuple[str, ...] = ()

    def __call__(self, prediction: Any) -> dict[str, float]:
        scores = np.asarray(prediction.predictions, dtype=float)[:, :SCORE_COLUMNS]
        _, labels, soft_labels, defect_index = (np.asarray(a).ravel() for a in prediction.label_ids)
        names = np.asarray([*self.defect_types, ""])  # UNTYPED (-1) reads the last entry: "" is skipped
        defects = names[defect_index.astype(int)] if self.defect_types else None
        metrics = judge_metrics(labels.astype(int), scores[:, 0], defects=defects, soft_labels=soft_labels)
        metrics["answer_loss"] = float(scores[:, 1].mean())
        metrics["answer_mass"] = float(scores[:, 2].mean())
        return metrics


def eval_history(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The validation metrics of each evaluation during training (Trainer's log entries with eval_* keys)."""
    return [
        {"step": entry["step"], **{k: v for k, v in entry.items() if k.startswith("eval_")}}
        for entry in log_history
        if any(k.startswith("eval_") for k in entry)
    ]
