"""Training of the defect judge (recipes/sft.py): collation, the answer loss, the evaluation's metrics (Trainer's
compute_metrics), model setup, MLflow tracking and the run's metadata."""

from .args import JudgeScriptArguments
from .collate import (
    JudgeDataCollator,
    check_max_length,
    find_label_table_or_none,
    max_sequence_length,
    prepare_split,
    training_chat_template,
)
from .evaluation import EVAL_TRUTH, JudgeMetrics, defect_types_of, eval_history
from .metadata import TRAINING_FILE, read_training_metadata, training_metadata
from .model_setup import build_model, lora_target_regex, peft_config_for, set_trainable_parts
from .tracking import mlflow_run
from .trainer import JudgeSFTTrainer, answer_loss_terms

__all__ = [
    "TRAINING_FILE",
    "JudgeDataCollator",
    "EVAL_TRUTH",
    "JudgeSFTTrainer",
    "JudgeMetrics",
    "JudgeScriptArguments",
    "answer_loss_terms",
    "build_model",
    "check_max_length",
    "defect_types_of",
    "eval_history",
    "find_label_table_or_none",
    "lora_target_regex",
    "max_sequence_length",
    "mlflow_run",
    "peft_config_for",
    "prepare_split",
    "read_training_metadata",
    "set_trainable_parts",
    "training_chat_template",
    "training_metadata",
]
