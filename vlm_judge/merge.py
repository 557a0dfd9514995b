"""Merge a trained judge into one standalone model folder that transformers and vLLM load as they would
Qwen/Qwen2-VL-*-Instruct: weights, config, generation config, the processor with the training pixel bounds and
the chat template, plus judge_metadata.json (base model, git commit, date, recipe, dataset fingerprint, prompt
version, pixel bounds, eval metrics).

- A LoRA/QLoRA run (adapter_config.json): the base model is loaded unquantized in the training dtype (bf16 for
  QLoRA, as usual: the adapter was trained against the 4-bit base, merging into the full-precision base is the
  standard QLoRA practice and the small difference is expected), the adapter merged in (merge_and_unload) and the
  result saved. The readout temperature the run fitted on its validation split (judge_training.json's
  calibration, vlm_judge.calibration) is folded into the merged weights: an adapter cannot hold it.
- A full fine-tune (no adapter): the model files are copied as they are, without the trainer's state (the run
  already folded its temperature into them).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from vlm_judge.judge_metadata import METADATA_FILE
from vlm_judge.training.metadata import (
    TRAINING_FILE,
    git_commit,
    now_iso,
    read_training_metadata,
    write_json,
)

logger = logging.getLogger(__name__)

# Trainer/run files that do not belong in a served model folder.
_SKIP_NAMES = {
    "training_args.bin",
    "trainer_state.json",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state.pth",
    "all_results.json",
    "train_results.json",
    "eval_results.json",
    "test_results.json",
    "README.md",
    TRAINING_FILE,
}
_SKIP_DIRS_PREFIX = ("checkpoint-", "runs", "mlruns")


class MergeError(ValueError):
    """The input folder is neither a LoRA adapter nor a full model, or its base model cannot be found."""


def is_adapter_dir(folder: str | Path) -> bool:
    return (Path(folder) / "adapter_config.json").is_file()


def _copy_full_model(source: Path, output: Path) -> None:
    if not (source / "config.json").is_file():
        raise MergeError(f"{source} has neither adapter_config.json (LoRA) nor config.json (full model)")
    output.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name in _SKIP_NAMES or (item.is_dir() and item.name.startswith(_SKIP_DIRS_PREFIX)):
            continue
        if item.is_dir():
            shutil.copytree(item, output / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, output / item.name)


def adapter_temperature(training: dict[str, Any]) -> float | None:
    """The readout temperature a LoRA run fitted but could not store in its adapter (judge_training.json)."""
    calibration = training.get("calibration") or {}
    if calibration.get("temperature") is None or calibration.get("folded_into_weights"):
        return None
    return float(calibration["temperature"])


def _merge_adapter(
    adapter: Path, output: Path, base_model: str | None, dtype: str | None, temperature: float | None
) -> str:
    from peft import PeftModel

    from vlm_judge.calibration import fold_temperature
    from vlm_judge.modeling import load_model

    config = json.loads((adapter / "adapter_config.json").read_text())
    base = base_model or config.get("base_model_name_or_path")
    if not base:
        raise MergeError(f"{adapter}/adapter_config.json names no base model; pass --base_model")
    logger.info("merging adapter %s into base %s (dtype %s)", adapter, base, dtype)
    model = load_model(base, dtype=dtype or "auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if temperature is not None:
        logger.info("folding the run's readout temperature %.4f into the merged model", temperature)
        fold_temperature(merged, temperature)
    merged.save_pretrained(str(output))
    return str(base)


def merge_judge(
    adapter_dir: str | Path,
    output_dir: str | Path,
    *,
    base_model: str | None = None,
    dtype: str | None = None,
) -> Path:
    """Write the standalone judge to output_dir (see module docstring); returns output_dir."""
    from vlm_judge.modeling import load_processor, pixel_bounds

    source, output = Path(adapter_dir), Path(output_dir)
    if not source.is_dir():
        raise MergeError(f"{source} does not exist")
    if output.resolve() == source.resolve():
        raise MergeError("output_dir must differ from the adapter/model folder")
    training = read_training_metadata(source) or {}
    if training.get("quantization") and not dtype:
        dtype = "bfloat16"  # a QLoRA base is merged unquantized
    dtype = dtype or training.get("dtype") or "auto"
    if dtype == "None":
        dtype = "auto"

    output.mkdir(parents=True, exist_ok=True)
    if is_adapter_dir(source):
        base = _merge_adapter(source, output, base_model, dtype, adapter_temperature(training))
    else:
        _copy_full_model(source, output)
        base = training.get("base_model") or str(source)

    # The processor saved with the run carries the training pixel bounds and the chat template.
    processor = load_processor(source)
    processor.save_pretrained(str(output))
    min_pixels, max_pixels = pixel_bounds(processor)
    trained_bounds = training.get("pixel_bounds")
    if trained_bounds and (trained_bounds["min_pixels"], trained_bounds["max_pixels"]) != (
        min_pixels,
        max_pixels,
    ):
        raise MergeError(
            f"processor pixel bounds {(min_pixels, max_pixels)} differ from the training run's {trained_bounds}"
        )

    metadata = _judge_metadata(
        source, base, training, (min_pixels, max_pixels), adapter=is_adapter_dir(source)
    )
    write_json(output / METADATA_FILE, metadata)
    logger.info("merged judge written to %s", output)
    return output


def _judge_metadata(
    source: Path, base: str, training: dict[str, Any], bounds: tuple[int, int], *, adapter: bool
) -> dict[str, Any]:
    recipe = training.get("recipe") or {}
    return {
        "format": "vlm-judge-model/1",
        "created": now_iso(),
        "git": git_commit(),  # code that merged; the training run's commit is in training.git
        "source": str(source.resolve()),
        "merged_from_adapter": adapter,
        "base_model": base,
        "base_model_spec": training.get("base_model_spec"),
        "recipe": recipe.get("path"),
        "dataset_fingerprint": (training.get("dataset") or {}).get("fingerprint"),
        "dataset": training.get("dataset"),
        "prompt_version": (training.get("prompt") or {}).get("version"),
        "pixel_bounds": {"min_pixels": bounds[0], "max_pixels": bounds[1]},
        "label_mode": training.get("label_mode"),
        "metrics": training.get("metrics"),
        "calibration": training.get("calibration"),
        "training": training or None,
    }
