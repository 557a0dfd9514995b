"""Fine-tune Qwen2-VL into a Yes/No defect judge (TRL SFT; full, LoRA or QLoRA), in the style of TRL's
examples/scripts/sft_vlm.py. Everything not specific to this script lives in vlm_judge.training.

    accelerate launch [--config_file recipes/accelerate_configs/cpu.yaml] recipes/sft.py \
        --config recipes/tiny-cpu.yaml [--output_dir DIR] [--any_field VALUE ...]

The recipe YAML sets fields of three dataclasses: JudgeScriptArguments (data, pixel bounds, trainable parts,
label mode, judge eval, MLflow), TRL's SFTConfig (optimisation, eval/save schedule) and TRL's ModelConfig
(model path, dtype, LoRA/QLoRA). Command-line flags override it.

Metric names: eval_* is always the validation split (each evaluation during training; `metric_for_best_model:
roc_auc` reads eval_roc_auc), test_* the test split, evaluated once at the end by the final (best) model.

Writes to output_dir: the model (full weights, or the LoRA adapter) with the processor and its pixel bounds,
test_results.json (test_roc_auc, test_accuracy, test_brier, test_roc_auc_<type> on the test split, prompts unseen
in training; best_eval_roc_auc) and the same numbers as eval_results.json (eval_roc_auc, eval_roc_auc_<type>: the
file name and keys other tools read), judge_training.json (recipe, data fingerprint, prompt version, base model, pixel
bounds, metrics, calibration, the validation history) for scripts/merge_lora.py, and an MLflow run (./mlruns by
default).

Calibration (calibrate_temperature, on by default): after training, the readout temperature is fitted on the
validation split and folded into the model (vlm_judge.calibration), so the test metrics, the saved full model and the
merged judge give calibrated probabilities; a LoRA adapter cannot hold it, so scripts/merge_lora.py folds it in.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import torch
from trl import ModelConfig, SFTConfig, TrlParser

from vlm_judge import embedded
from vlm_judge.calibration import fold_temperature
from vlm_judge.data import dataset_fingerprint, load_judge_dataset
from vlm_judge.modeling import load_processor, pixel_bounds
from vlm_judge.protocol import load_prompt
from vlm_judge.training import (
    JudgeDataCollator,
    JudgeScriptArguments,
    JudgeSFTTrainer,
    build_model,
    check_max_length,
    defect_types_of,
    eval_history,
    mlflow_run,
    prepare_split,
    training_metadata,
)
from vlm_judge.training.metadata import TRAINING_FILE, write_json

logger = logging.getLogger("recipes.sft")


def recipe_path(argv: list[str]) -> str | None:
    return argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None


def main(
    script_args: JudgeScriptArguments, training_args: SFTConfig, model_args: ModelConfig, recipe: str | None = None
) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if script_args.torch_threads:
        torch.set_num_threads(script_args.torch_threads)

    # The embedded default, if the recipe asks for it: the tiny model, the synthetic logs, a training stream.
    stream = embedded.prepare(script_args, model_args, training_args)
    if not model_args.model_name_or_path:
        raise ValueError("set model_name_or_path (or tiny_model) in the recipe")

    prompt = load_prompt(script_args.prompt_file)
    processor = load_processor(
        model_args.model_name_or_path, min_pixels=script_args.min_pixels, max_pixels=script_args.max_pixels
    )
    check_max_length(training_args.max_length, processor, prompt)
    data = load_judge_dataset(script_args.dataset_dir, seed=script_args.split_seed, min_side=script_args.min_image_side)
    for split in ("train", script_args.judge_eval_split, script_args.judge_test_split):
        if split not in data:
            raise ValueError(f"{script_args.dataset_dir} has no {split!r} split (splits: {list(data)})")
    eval_split = data[script_args.judge_eval_split]
    if script_args.judge_eval_max_samples and len(eval_split) > script_args.judge_eval_max_samples:
        eval_split = eval_split.shuffle(seed=0).select(range(script_args.judge_eval_max_samples))

    # The judge collator builds the chat and the answer-only labels itself, from columns TRL would drop.
    training_args.remove_unused_columns = False
    if script_args.judge_eval_batch_size is not None:
        training_args.per_device_eval_batch_size = script_args.judge_eval_batch_size
    training_args.assistant_only_loss = False
    model, peft_config = build_model(model_args, script_args)
    train_dataset = stream if stream is not None else prepare_split(data["train"], script_args.max_train_samples)

    run_name = training_args.run_name or Path(training_args.output_dir).name
    with mlflow_run(
        script_args.mlflow_tracking_uri,
        script_args.mlflow_experiment,
        run_name=run_name,
        is_main_process=training_args.process_index == 0,
    ) as run:
        if run.enabled and "mlflow" not in training_args.report_to:
            training_args.report_to = [*training_args.report_to, "mlflow"]
        collator = JudgeDataCollator(
            processor=processor, prompt=prompt, label_mode=script_args.label_mode, defect_types=defect_types_of(data)
        )
        trainer = JudgeSFTTrainer(  # its compute_metrics reports the judge's metrics on every evaluation
            model=model,
            args=training_args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=prepare_split(eval_split) if training_args.eval_strategy != "no" else None,
            processing_class=processor,
            peft_config=peft_config,
            judge_prompt=prompt,
            group_by="prompt_id" if script_args.group_batches_by_prompt else None,
            pair_loss_weight=script_args.pair_loss_weight,
        )
        fingerprint = dataset_fingerprint(script_args.dataset_dir)
        run.log_params(
            {
                "recipe": recipe,
                "dataset_dir": script_args.dataset_dir,
                "dataset_fingerprint": fingerprint,
                "prompt_version": prompt.version,
                "label_mode": script_args.label_mode,
                "pixel_bounds": pixel_bounds(processor),
                **{f"split_size_{k}": len(v) for k, v in data.items()},
            }
        )
        run.set_tags({"dataset_fingerprint": fingerprint, "prompt_version": prompt.version})
        if recipe:
            run.log_artifact(recipe, artifact_path="recipe")

        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_metrics("train", train_result.metrics)

        calibration = None
        if script_args.calibrate_temperature:
            # Temperature scaling on the validation split, folded into the weights; an adapter cannot hold it, so
            # judge_training.json carries it to scripts/merge_lora.py.
            fit = trainer.fit_temperature(prepare_split(eval_split))  # judge_eval_max_samples bounds its cost
            if fit.at_search_bound:
                logger.warning(
                    "readout temperature %.3g is at the end of its search range (%d %s rows): the judge's scores "
                    "carry little signal there; folded anyway (calibrate_temperature: false to skip)",
                    fit.temperature, fit.rows, script_args.judge_eval_split,
                )
            fold_temperature(trainer.model, fit.temperature)
            calibration = {
                **fit.to_dict(), "split": script_args.judge_eval_split, "folded_into_weights": peft_config is None,
            }
            trainer.log({f"calibration_{key}": value for key, value in fit.to_dict().items()})

        # Final numbers: the (best, when load_best_model_at_end) model, calibrated, on the test split, test_* keys.
        test_split = script_args.judge_test_split
        metrics = trainer.evaluate(prepare_split(data[test_split]), metric_key_prefix="test")
        metrics["test_split"] = test_split
        if trainer.state.best_metric is not None:
            best = training_args.metric_for_best_model.removeprefix("eval_")
            metrics[f"best_eval_{best}"] = trainer.state.best_metric  # the validation value that chose the model
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
        # eval_results.json (eval_roc_auc = the test split) is the interface scripts and checks read; same numbers.
        trainer.save_metrics("eval", {re.sub(r"^test_", "eval_", k): v for k, v in metrics.items()})
        trainer.save_model(training_args.output_dir)  # weights or adapter + processor with its pixel bounds
        if trainer.is_world_process_zero():
            meta = training_metadata(
                recipe=recipe, script_args=script_args, training_args=training_args, model_args=model_args,
                processor=processor, prompt=prompt, data=data, fingerprint=fingerprint, metrics=metrics,
                adapter=peft_config is not None, history=eval_history(trainer.state.log_history),
                train_metrics=train_result.metrics, calibration=calibration,
            )
            meta_path = write_json(Path(training_args.output_dir) / TRAINING_FILE, meta)
            run.log_artifact(meta_path)  # the test_* metrics reached MLflow through Trainer's log
            run.log_artifact(Path(training_args.output_dir) / "test_results.json")
    trainer.accelerator.print(f"saved to {training_args.output_dir}: test_roc_auc={metrics['test_roc_auc']:.4f}")
    trainer.end()  # finish trackers, destroy the process group
    return metrics


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = TrlParser((JudgeScriptArguments, SFTConfig, ModelConfig))
    main(*parser.parse_args_and_config(), recipe=recipe_path(sys.argv))
