"""The model side of a recipe: base model, quantization, which parts train.

Qwen2-VL's parts, by parameter name in transformers 5:

    model.visual.patch_embed / model.visual.blocks.*   the vision tower (ViT)
    model.visual.merger                                2x2 patch merger projecting into the LM width
    model.language_model.*, lm_head                    the language model

Full fine-tune: train_vision_tower / train_merger / train_language_model switch requires_grad. LoRA: adapters on
`lora_target_modules` *of the language model only* (a bare name like q_proj would also hit nothing or the wrong
thing in the vision tower), plus the vision blocks' qkv/proj/fc1/fc2 when train_vision_tower, and the merger
fully trained (modules_to_save) when train_merger. QLoRA keeps the vision tower and merger unquantized (they are
~0.7 B of the 7 B, and a 4-bit merger could not be trained as modules_to_save).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch

from vlm_judge.modeling import load_model

logger = logging.getLogger(__name__)

VISION_PREFIX = "model.visual."
MERGER_PREFIX = "model.visual.merger."
LM_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VISION_PROJECTIONS = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
# Not quantized in QLoRA: the whole vision side and the output head.
QUANTIZATION_SKIP_MODULES = ["model.visual", "lm_head"]  # prefixes (transformers matches from the start)


def part_of(name: str) -> str:
    """'vision_tower', 'merger' or 'language_model' for a parameter/module name of Qwen2-VL (PEFT prefixes ok)."""
    if MERGER_PREFIX in name or name.endswith("visual.merger"):
        return "merger"
    if VISION_PREFIX in name:
        return "vision_tower"
    return "language_model"


# ---------------------------------------------------------------------------------------------- loading


def quantization_config(model_args: Any) -> Any:
    """TRL's BitsAndBytesConfig from ModelConfig (load_in_4bit/8bit), with the vision side left unquantized."""
    from trl import get_quantization_config

    config = get_quantization_config(model_args)
    if config is not None:
        config.llm_int8_skip_modules = list(QUANTIZATION_SKIP_MODULES)
    return config


def load_base_model(model_args: Any, *, quantization: Any = None) -> Any:
    kwargs: dict[str, Any] = {}
    if quantization is not None and torch.cuda.is_available():
        from trl import get_kbit_device_map

        kwargs["device_map"] = get_kbit_device_map()  # each process loads its quantized copy on its own GPU
    return load_model(
        model_args.model_name_or_path,
        dtype=model_args.dtype or "auto",
        attn_implementation=model_args.attn_implementation,
        quantization_config=quantization,
        revision=model_args.model_revision,
        **kwargs,
    )


def lora_target_regex(targets: str | list[str] | None, train_vision_tower: bool) -> str:
    """A PEFT target_modules regex (full match) on the LM's projections (and the ViT's, when it trains)."""
    if targets is None or targets == "all-linear":
        names = list(LM_PROJECTIONS)
    elif isinstance(targets, str):
        names = [targets]
    else:
        names = list(targets)
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.]+", n)]
    if bad:
        raise ValueError(f"lora_target_modules must be module names (e.g. q_proj), got {bad}")
    lm = rf".*language_model\.layers\.\d+\.(self_attn|mlp)\.({'|'.join(map(re.escape, names))})"
    if not train_vision_tower:
        return lm
    vision = rf".*visual\.blocks\.\d+\.({'|'.join(map(re.escape, VISION_PROJECTIONS))})"
    return f"({lm})|({vision})"


def peft_config_for(model_args: Any, script_args: Any) -> Any:
    """TRL's LoraConfig from ModelConfig (rank, alpha, dropout, rslora/dora) with judge-aware targets."""
    from trl import get_peft_config

    config = get_peft_config(model_args)
    if config is None:
        return None
    config.target_modules = lora_target_regex(model_args.lora_target_modules, script_args.train_vision_tower)
    modules_to_save = list(config.modules_to_save or [])
    if script_args.train_merger and "merger" not in modules_to_save:
        modules_to_save.append("merger")
    config.modules_to_save = modules_to_save or None
    return config


def set_trainable_parts(model: Any, script_args: Any) -> dict[str, int]:
    """Full fine-tune: freeze/unfreeze the three parts; returns trainable parameter counts per part."""
    wanted = {
        "vision_tower": script_args.train_vision_tower,
        "merger": script_args.train_merger,
        "language_model": script_args.train_language_model,
    }
    if not any(wanted.values()):
        raise ValueError(
            "nothing to train: train_vision_tower, train_merger and train_language_model are all off"
        )
    for name, param in model.named_parameters():
        param.requires_grad_(wanted[part_of(name)])
    return trainable_counts(model)


def trainable_counts(model: Any) -> dict[str, int]:
    counts = {"vision_tower": 0, "merger": 0, "language_model": 0}
    for name, param in model.named_parameters():
        if param.requires_grad:
            counts[part_of(name)] += param.numel()
    return counts


def build_model(model_args: Any, script_args: Any) -> tuple[Any, Any]:
    """(model, peft_config): peft_config goes to the trainer, which wraps the model (TRL handles QLoRA dtypes)."""
    quantization = quantization_config(model_args)
    model = load_base_model(model_args, quantization=quantization)
    peft_config = peft_config_for(model_args, script_args)
    if quantization is not None and peft_config is None:
        raise ValueError("load_in_4bit/load_in_8bit needs use_peft: a quantized base can only train adapters")
    if peft_config is None:
        counts = set_trainable_parts(model, script_args)
        logger.info("full fine-tune, trainable parameters per part: %s", counts)
    else:
        for param in model.parameters():
            param.requires_grad_(False)  # PEFT unfreezes the adapters and modules_to_save
    return model, peft_config
