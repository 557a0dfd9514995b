"""scripts/merge_lora.py: adapter + base -> one standalone model folder with the same p_defect and the metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlm_judge.calibration import fold_temperature
from vlm_judge.modeling import load_model, load_processor, pixel_bounds, score_images

REPO = Path(__file__).resolve().parent.parent
SIDE = 112
BOUNDS = {"min_pixels": SIDE * SIDE, "max_pixels": SIDE * SIDE}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from vlm_judge.embedded.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("merge-images")
    table = generate_synthetic_dataset(root, num_prompts=3, num_systems=2, image_size=SIDE, seed=3)
    return [str(root / name) for name in table["image"]]


def _fake_training_metadata(folder: Path, base: Path, *, adapter: bool) -> dict:
    meta = {
        "base_model": str(base),
        "adapter": adapter,
        "dtype": "float32",
        "quantization": None,
        "recipe": {"path": "recipes/tiny-cpu.yaml", "text": "..."},
        "dataset": {"dir": "data/x", "fingerprint": "f" * 64, "splits": {"train": 1}},
        "prompt": {"version": "defect-judge-v1"},
        "pixel_bounds": BOUNDS,
        "label_mode": "hard",
        "metrics": {"eval_roc_auc": 0.75},
        "git": {"commit": "abc", "dirty": False},
        # A full fine-tune's run folds its temperature itself; an adapter cannot hold it, the merge folds it.
        "calibration": {"temperature": 2.0, "split": "validation", "folded_into_weights": not adapter},
    }
    (folder / "judge_training.json").write_text(json.dumps(meta))
    return meta


def test_merged_lora_gives_the_same_p_defect_as_adapter_plus_base(tiny_model_dir, images, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    from vlm_judge.training import lora_target_regex

    processor = load_processor(tiny_model_dir, **BOUNDS)
    base = load_model(tiny_model_dir, dtype="float32")
    # Random (non-zero) B matrices and a trained-in-full merger: the merge must change the outputs.
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=lora_target_regex(["q_proj", "v_proj", "gate_proj"], train_vision_tower=True),
        modules_to_save=["merger"],
        init_lora_weights=False,
    )
    model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "modules_to_save" in name:
                param.add_(0.05 * torch.randn_like(param))
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    processor.save_pretrained(adapter)
    _fake_training_metadata(adapter, tiny_model_dir, adapter=True)

    out = tmp_path / "merged"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "merge_lora.py"),
            "--adapter",
            str(adapter),
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    fresh_base = load_model(tiny_model_dir, dtype="float32")
    with_adapter = PeftModel.from_pretrained(fresh_base, adapter)
    uncalibrated = score_images(with_adapter, processor, images)
    plain = score_images(load_model(tiny_model_dir, dtype="float32"), processor, images)
    assert max(abs(a - b) for a, b in zip(uncalibrated, plain, strict=True)) > 1e-4, "adapter had no effect"
    # The run's temperature (2.0) is folded into the merged weights: adapter + base with every logit halved.
    fold_temperature(with_adapter, 2.0)
    expected = score_images(with_adapter, processor, images)
    assert max(abs(a - b) for a, b in zip(expected, uncalibrated, strict=True)) > 1e-4, "temperature had no effect"

    merged_processor = load_processor(out)  # the saved bounds, not passed again
    assert pixel_bounds(merged_processor) == (BOUNDS["min_pixels"], BOUNDS["max_pixels"])
    merged = load_model(out, dtype="float32")
    assert not any("lora" in n for n, _ in merged.named_parameters())
    got = score_images(merged, merged_processor, images)
    assert got == pytest.approx(expected, abs=1e-5)

    # A standalone folder: weights, config, generation config, processor, chat template, metadata.
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "processor_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "judge_metadata.json",
    ):
        assert (out / name).is_file(), name
    meta = json.loads((out / "judge_metadata.json").read_text())
    assert meta["base_model"] == str(tiny_model_dir)
    assert meta["merged_from_adapter"] is True
    assert meta["dataset_fingerprint"] == "f" * 64
    assert meta["prompt_version"] == "defect-judge-v1"
    assert meta["metrics"] == {"eval_roc_auc": 0.75}
    assert meta["recipe"] == "recipes/tiny-cpu.yaml"
    assert meta["pixel_bounds"] == BOUNDS
    assert meta["calibration"]["temperature"] == 2.0
    assert meta["created"] and "commit" in meta["git"]


def test_full_finetune_is_copied_with_metadata(tiny_model_dir, images, tmp_path):
    from vlm_judge.merge import merge_judge

    run = tmp_path / "run"
    model = load_model(tiny_model_dir, dtype="float32")
    processor = load_processor(tiny_model_dir, **BOUNDS)
    model.save_pretrained(run)
    processor.save_pretrained(run)
    (run / "checkpoint-5").mkdir()
    (run / "training_args.bin").write_bytes(b"x")
    _fake_training_metadata(run, tiny_model_dir, adapter=False)

    out = merge_judge(run, tmp_path / "merged")
    assert not (out / "checkpoint-5").exists() and not (out / "training_args.bin").exists()
    meta = json.loads((out / "judge_metadata.json").read_text())
    assert meta["merged_from_adapter"] is False and meta["base_model"] == str(tiny_model_dir)
    # The run folded its temperature already: the weights are copied as they are, not divided again.
    expected = score_images(model, processor, images)
    got = score_images(load_model(out, dtype="float32"), load_processor(out), images)
    assert got == pytest.approx(expected, abs=1e-6)


def test_merge_refuses_a_folder_without_a_model(tmp_path):
    from vlm_judge.merge import MergeError, merge_judge

    (tmp_path / "empty").mkdir()
    with pytest.raises(MergeError, match="neither adapter_config.json"):
        merge_judge(tmp_path / "empty", tmp_path / "out")
