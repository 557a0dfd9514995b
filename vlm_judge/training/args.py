"""Script arguments of recipes/sft.py: the judge-specific half of a recipe (TRL's SFTConfig and ModelConfig hold
the rest). Every field can be set in the recipe YAML and overridden on the command line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vlm_judge.modeling import DEFAULT_MIN_PIXELS, NATIVE_1024_MAX_PIXELS

LABEL_MODES = ("hard", "soft")


def _as_dict(value: dict | str | None, name: str) -> dict[str, Any] | None:
    # YAML gives a mapping, the command line a JSON string.
    if value is None or isinstance(value, dict):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--{name} must be a JSON object, got {value!r}: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"--{name} must be a JSON object, got {value!r}")
    return parsed


@dataclass
class JudgeScriptArguments:
    # ---- data
    dataset_dir: str = field(
        default="data/synthetic",
        metadata={
            "help": "Canonical dataset folder (images/ + labels.csv|jsonl|parquet), see vlm_judge.data."
        },
    )
    synthetic: dict | str | None = field(
        default=None,
        metadata={
            "help": "SyntheticConfig fields (JSON on the CLI). When set and dataset_dir has no label table, the "
            "synthetic assessor logs are generated there first (the embedded default)."
        },
    )
    synthetic_stream: dict | str | None = field(
        default=None,
        metadata={
            "help": "StreamCurriculum fields (JSON on the CLI; {} for the defaults). When set, the train split is "
            "rendered on the fly from the `synthetic` settings (vlm_judge.embedded.synthetic.stream: every image new, "
            "clean/defective twins, types joining one at a time, defect areas shrinking); dataset_dir's own train "
            "split is not used, its validation and test splits are. Needs max_steps."
        },
    )
    min_image_side: int = field(
        default=256,
        metadata={"help": "Data guard: images with a shorter side are excluded (vlm_judge.data)."},
    )
    split_seed: int = field(
        default=0, metadata={"help": "Seed of the prompt-grouped split (when none is given)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training rows."}
    )
    prompt_file: str | None = field(
        default=None, metadata={"help": "Judge prompt YAML (default prompts/defect_judge.yaml)."}
    )
    # ---- model
    tiny_model: dict | str | None = field(
        default=None,
        metadata={
            "help": "TinyModelSpec fields (JSON on the CLI): build the tiny random-init Qwen2-VL into "
            "model_name_or_path when that folder does not exist yet (the embedded default)."
        },
    )
    min_pixels: int = field(
        default=DEFAULT_MIN_PIXELS, metadata={"help": "Processor min_pixels (saved with the model)."}
    )
    max_pixels: int = field(
        default=NATIVE_1024_MAX_PIXELS,
        metadata={
            "help": "Processor max_pixels (saved with the model); 1036*1036 keeps a 1024^2 image native."
        },
    )
    train_vision_tower: bool = field(
        default=False,
        metadata={
            "help": "Train the ViT blocks + patch embedding (full FT: unfreeze; LoRA: adapters on them)."
        },
    )
    train_merger: bool = field(
        default=True,
        metadata={
            "help": "Train the vision-to-LM merger (full FT: unfreeze; LoRA: fully trained, modules_to_save)."
        },
    )
    train_language_model: bool = field(
        default=True,
        metadata={"help": "Full FT only: train the LM (LoRA always adapts lora_target_modules)."},
    )
    # ---- loss
    label_mode: str = field(
        default="hard",
        metadata={
            "help": "hard: the answer is the assessors' majority label. soft: cross-entropy over the Yes/No pair "
            "with target = vote ratio (soft_label)."
        },
    )
    group_batches_by_prompt: bool = field(
        default=False,
        metadata={
            "help": "Batches of whole prompts (all systems' images of a scene together): clean and defective "
            "versions of one scene in the same batch make the defect, not the scene, the signal."
        },
    )
    pair_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of a pairwise (Bradley-Terry) term over the images of one prompt in a batch whose "
            "targets differ: -log sigmoid(logit p_a - logit p_b), a the more defective. 0 = off. Needs batches "
            "that hold several images of a prompt (the synthetic stream's twins, or group_batches_by_prompt)."
        },
    )
    calibrate_temperature: bool = field(
        default=True,
        metadata={
            "help": "After training, fit the readout temperature on judge_eval_split (vlm_judge.calibration) and "
            "fold it into the model: the test metrics, the saved full model and the merged judge are calibrated "
            "(a LoRA adapter cannot hold it: judge_training.json records it and scripts/merge_lora.py folds it)."
        },
    )
    # ---- judge evaluation (Trainer's eval loop with the judge's compute_metrics)
    judge_eval_split: str = field(
        default="validation", metadata={"help": "Split evaluated during training (eval_* metrics)."}
    )
    judge_test_split: str = field(
        default="test", metadata={"help": "Split evaluated at the end (test_* metrics) -> test_results.json."}
    )
    judge_eval_max_samples: int | None = field(
        default=None, metadata={"help": "Cap on images scored per eval."}
    )
    judge_eval_batch_size: int | None = field(
        default=None,
        metadata={"help": "Older spelling of per_device_eval_batch_size; when set, it sets that field."},
    )
    # ---- tracking
    mlflow_tracking_uri: str = field(
        default="./mlruns", metadata={"help": "MLflow tracking URI ('' disables)."}
    )
    mlflow_experiment: str = field(default="vlm-judge", metadata={"help": "MLflow experiment name."})
    torch_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads (CPU runs)."})

    def __post_init__(self) -> None:
        self.synthetic = _as_dict(self.synthetic, "synthetic")
        self.tiny_model = _as_dict(self.tiny_model, "tiny_model")
        self.synthetic_stream = _as_dict(self.synthetic_stream, "synthetic_stream")
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"label_mode must be one of {LABEL_MODES}, got {self.label_mode!r}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels {self.min_pixels} exceeds max_pixels {self.max_pixels}")
