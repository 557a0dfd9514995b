"""Proof that the whole training stack learns image-conditioned answers, and that what it learns generalises.

recipes/sft.py end to end (collation, answer-only labels, the judge loss, the evaluation reading p_defect through
the shared protocol), twice:

- memorisation: 32 balanced training images, 16 scenes each once clean and once with a defect, rendered at the
  training resolution (112 px, no resize). Both images of a pair share the scene, so the only way to tell them
  apart is to see the defect: a stack that learns only the answer prior (or ignores the image) stays at ROC-AUC
  0.5. Measured: 1.0 after ~125 steps (~15 s on one free core).
- generalisation: the on-the-fly training stream (every image new: nothing to memorise), scored on held-out
  prompts rendered to disk that the stream never draws. Measured: 0.89 after 500 steps (~140 s on 2 cores).
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
SIDE = 112
STREAM_SIDE = 224  # 64 visual tokens: the recipe's resolution (at 112 px the same run stays at chance)
STREAM_STEPS = 500

# Recipe fields both runs share (the rest: _run_recipe's overrides).
COMMON = {
    "dtype": "float32",
    "min_image_side": 64,
    "train_vision_tower": True,
    "per_device_eval_batch_size": 32,
    "mlflow_tracking_uri": "",
    "max_length": None,
    "bf16": False,
    "use_cpu": True,
    "gradient_checkpointing": False,
    "learning_rate": 5.0e-4,
    "lr_scheduler_type": "constant",
    "logging_steps": 50,
    "save_strategy": "no",
    "report_to": [],
    "disable_tqdm": True,
    "seed": 0,
}


def _run_recipe(tmp_path: Path, side: int, **fields) -> tuple[dict, float]:
    """recipes/sft.py's main on a YAML recipe of COMMON + fields at `side` px; (metrics, seconds)."""
    from trl import ModelConfig, SFTConfig, TrlParser

    from vlm_judge.training import JudgeScriptArguments

    recipe = tmp_path / "recipe.yaml"
    pixels = {"min_pixels": side * side, "max_pixels": side * side}
    recipe.write_text(yaml.safe_dump({**COMMON, **pixels, "output_dir": str(tmp_path / "run"), **fields}))
    spec = importlib.util.spec_from_file_location("recipes_sft", REPO / "recipes" / "sft.py")
    sft = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sft)
    args = TrlParser((JudgeScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config(["--config", str(recipe)])
    threads = torch.get_num_threads()
    start = time.monotonic()
    try:
        metrics = sft.main(*args, recipe=str(recipe))
    finally:
        torch.set_num_threads(threads)
    return metrics, time.monotonic() - start


@pytest.mark.slow
def test_tiny_judge_learns_image_conditioned_answers(tiny_model_dir, tmp_path):
    from vlm_judge.embedded.synthetic import generate_synthetic_dataset

    data = tmp_path / "pairs"
    table = generate_synthetic_dataset(
        data,
        num_prompts=16,
        num_systems=2,
        image_size=SIDE,
        seed=0,
        defect_rates=(0.0, 1.0),  # system 1 always clean, system 2 always defective: 16 same-scene pairs
        defect_types=("noise_burst",),  # the salient defect: this proves the stack, not the model's ceiling
        split_fractions=(1.0, 0.0, 0.0),
    )
    assert len(table) == 32 and table["label"].sum() == 16

    metrics, elapsed = _run_recipe(
        tmp_path,
        SIDE,
        model_name_or_path=str(tiny_model_dir),
        dataset_dir=str(data),
        judge_eval_split="train",  # train ROC-AUC is the bar here
        judge_test_split="train",
        torch_threads=1,
        per_device_train_batch_size=8,
        max_steps=200,
        eval_strategy="steps",
        eval_steps=50,
    )
    print(f"proof: train ROC-AUC {metrics['test_roc_auc']:.3f} after 200 steps in {elapsed:.0f} s")
    assert metrics["test_roc_auc"] >= 0.95
    assert metrics["test_accuracy"] >= 0.9  # p_defect on the right side of 0.5, not only ranked


@pytest.mark.slow
def test_tiny_judge_generalises_to_unseen_prompts(tmp_path):
    synthetic = {
        "num_prompts": 48, "num_systems": 2, "image_size": STREAM_SIDE, "seed": 0, "defect_rates": [0.5, 0.5],
        "defect_types": ["noise_burst"], "defect_area": [0.6, 0.9], "split_fractions": [0.1, 0.45, 0.45],
    }
    pixels = {"min_pixels": STREAM_SIDE * STREAM_SIDE, "max_pixels": STREAM_SIDE * STREAM_SIDE}
    metrics, elapsed = _run_recipe(
        tmp_path,
        STREAM_SIDE,
        model_name_or_path=str(tmp_path / "model"),
        tiny_model={**pixels, "init_gain": 1.0},
        dataset_dir=str(tmp_path / "heldout"),
        synthetic=synthetic,
        synthetic_stream={"types": ["noise_burst"], "add_every": 0, "area_start": [0.6, 0.9]},
        torch_threads=2,
        per_device_train_batch_size=16,
        max_steps=STREAM_STEPS,
        eval_strategy="no",
    )
    print(f"generalisation: held-out ROC-AUC {metrics['test_roc_auc']:.3f} after {STREAM_STEPS} steps in {elapsed:.0f} s")
    assert metrics["test_split"] == "test" and metrics["test_n"] >= 40  # prompts the stream never drew
    assert metrics["test_roc_auc"] >= 0.8
