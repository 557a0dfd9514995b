"""Every recipe parses into (JudgeScriptArguments, SFTConfig, ModelConfig) and builds its LoRA / 4-bit configs
without loading weights; the accelerate configs parse. The GPU recipes cannot run here, this keeps them honest."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
ACCELERATE_CONFIGS = sorted((REPO / "recipes" / "accelerate_configs").glob("*.yaml"))
GPU_RECIPES = ("qwen2vl-2b-lora.yaml", "qwen2vl-7b-qlora.yaml")


def _parse(path: Path):
    from trl import ModelConfig, SFTConfig, TrlParser

    from vlm_judge.training import JudgeScriptArguments

    # use_cpu: bf16 recipes refuse to parse on a machine without a GPU otherwise; nothing runs here.
    parser = TrlParser((JudgeScriptArguments, SFTConfig, ModelConfig))
    return parser.parse_args_and_config(["--config", str(path), "--use_cpu", "true"])


def test_all_recipes_present():
    names = {p.name for p in RECIPES}
    assert {"tiny-cpu.yaml", *GPU_RECIPES} <= names
    assert {p.stem for p in ACCELERATE_CONFIGS} >= {"cpu", "ddp", "fsdp", "zero2", "zero3"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_and_builds_its_configs(path):
    from vlm_judge.training import peft_config_for
    from vlm_judge.training.model_setup import quantization_config

    script_args, training_args, model_args = _parse(path)
    assert training_args.max_length is None  # never truncate image tokens
    assert training_args.load_best_model_at_end and training_args.metric_for_best_model in (
        "roc_auc",
        "eval_roc_auc",
    )
    assert training_args.save_steps % training_args.eval_steps == 0
    assert script_args.min_pixels <= script_args.max_pixels
    peft_config = peft_config_for(model_args, script_args)
    quant = quantization_config(model_args)
    if model_args.use_peft:
        assert peft_config is not None and peft_config.r == model_args.lora_r
        assert isinstance(peft_config.target_modules, str)  # a regex limited to the language model
    else:
        assert peft_config is None
    if model_args.load_in_4bit:
        assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4"
        assert "model.visual" in quant.llm_int8_skip_modules
    else:
        assert quant is None


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_gpu_recipes_train_at_native_resolution(name):
    from vlm_judge.modeling import NATIVE_1024_MAX_PIXELS, visual_tokens

    path = REPO / "recipes" / name
    script_args, training_args, model_args = _parse(path)
    assert script_args.max_pixels == NATIVE_1024_MAX_PIXELS
    assert visual_tokens(1024, 1024, script_args.min_pixels, script_args.max_pixels) == 1369
    assert model_args.model_name_or_path.startswith("Qwen/Qwen2-VL-")
    assert model_args.dtype == "bfloat16" and training_args.bf16
    assert training_args.gradient_checkpointing


def test_tiny_recipe_trains_at_the_resolution_its_data_is_rendered(tmp_path):
    script_args, training_args, model_args = _parse(REPO / "recipes" / "tiny-cpu.yaml")
    side = script_args.synthetic["image_size"]
    assert script_args.min_pixels == script_args.max_pixels == side * side  # no resize anywhere
    assert side % 28 == 0
    assert script_args.min_image_side <= side
    assert not model_args.use_peft and not training_args.bf16


def test_lora_targets_hit_only_the_language_model(tiny_model_dir):
    from trl import ModelConfig

    from vlm_judge.modeling import load_model
    from vlm_judge.training import JudgeScriptArguments, peft_config_for

    names = [n for n, _ in load_model(tiny_model_dir, dtype="float32").named_modules()]
    model_args = ModelConfig(
        use_peft=True, lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"]
    )
    for vision in (False, True):
        config = peft_config_for(model_args, JudgeScriptArguments(train_vision_tower=vision))
        hits = [n for n in names if re.fullmatch(config.target_modules, n)]
        lm_hits = [n for n in hits if "language_model" in n]
        assert len(lm_hits) == 2 * 5  # 2 layers x 5 projections
        vision_hits = [n for n in hits if "visual" in n]
        assert len(vision_hits) == (2 * 4 if vision else 0)  # 2 blocks x qkv/proj/fc1/fc2
        assert not any("merger" in n for n in hits)
        assert config.modules_to_save == ["merger"]


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_parses(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
    if path.stem == "cpu":
        assert config.use_cpu and config.num_processes == 1
