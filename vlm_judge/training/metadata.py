"""judge_training.json: what a training run was made from, saved next to the adapter/model.

scripts/merge_lora.py copies it into the merged model's judge_metadata.json, so a served judge can be traced back
to its recipe, code (git commit), data (fingerprint), prompt version, pixel bounds and eval metrics.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path
from typing import Any

TRAINING_FILE = "judge_training.json"
REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit(repo: str | Path = REPO_ROOT) -> dict[str, Any]:
    """{"commit": sha or None, "dirty": bool or None} of the code that runs (None outside a git checkout)."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        return {"commit": sha, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return path


def read_training_metadata(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / TRAINING_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def training_metadata(
    *,
    recipe: str | None,
    script_args: Any,
    training_args: Any,
    model_args: Any,
    processor: Any,
    prompt: Any,
    data: Any,
    fingerprint: str,
    metrics: dict[str, Any],
    adapter: bool,
    history: list[dict[str, Any]] | None = None,
    train_metrics: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from dataclasses import asdict

    from vlm_judge.modeling import pixel_bounds

    base = Path(model_args.model_name_or_path)
    spec_file = base / "tiny_model_spec.json"
    pretraining_file = base / "pretraining.json"
    pretraining = json.loads(pretraining_file.read_text()) if pretraining_file.is_file() else None
    min_pixels, max_pixels = pixel_bounds(processor)
    recipe_text = Path(recipe).read_text(encoding="utf-8") if recipe and Path(recipe).is_file() else None
    return {
        "format": "vlm-judge-training/1",
        "created": now_iso(),
        "git": git_commit(),
        "recipe": {"path": recipe, "text": recipe_text},
        "base_model": str(model_args.model_name_or_path),
        "base_model_spec": json.loads(spec_file.read_text()) if spec_file.is_file() else None,
        "base_model_pretraining": None  # the committed tiny base records how it was pretrained
        if pretraining is None
        else {key: pretraining.get(key) for key in ("what", "command", "model_sha256", "wall_seconds")},
        "adapter": adapter,
        "dtype": str(model_args.dtype),
        "quantization": "4bit" if model_args.load_in_4bit else "8bit" if model_args.load_in_8bit else None,
        "dataset": {
            "dir": str(script_args.dataset_dir),
            "fingerprint": fingerprint,
            "splits": {name: len(split) for name, split in data.items()},
        },
        "prompt": {"version": prompt.version, "file": prompt.source},
        "pixel_bounds": {"min_pixels": min_pixels, "max_pixels": max_pixels},
        "label_mode": script_args.label_mode,
        "script_args": asdict(script_args),
        "training": {
            "learning_rate": training_args.learning_rate,
            "lr_scheduler_type": str(training_args.lr_scheduler_type),
            "num_train_epochs": training_args.num_train_epochs,
            "max_steps": training_args.max_steps,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
            "world_size": training_args.world_size,
            "seed": training_args.seed,
            **(train_metrics or {}),
        },
        "metrics": metrics,
        "calibration": calibration,  # the readout temperature (vlm_judge.calibration), None when not fitted
        "eval_history": history or [],
    }
