"""Model and processor loading, written once for training, merging and HF scoring.

Pixel bounds are the one setting that must agree between training, the merged model and the server: Qwen2-VL
rounds each side to a multiple of 28 and rescales an image whose area exceeds `max_pixels`. transformers'
default max_pixels (28*28*1280 = 1,003,520) would shrink a 1024x1024 generation; NATIVE_1024_MAX_PIXELS keeps it
at 1036x1036 (grid [1, 74, 74], 1369 visual tokens), the nearest size the patch grid allows.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlm_judge.images import ImageSource, load_image
from vlm_judge.protocol import JudgePrompt, answer_token_ids, hf_messages, load_prompt, p_defect_from_logits

logger = logging.getLogger(__name__)

PATCH_FACTOR = 28  # patch 14 x spatial merge 2
NATIVE_1024_MAX_PIXELS = 1036 * 1036  # round(1024 / 28) * 28 = 1036 per side
DEFAULT_MIN_PIXELS = 56 * 56


def smart_resize_hw(height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The (height, width) the Qwen2-VL image processor will resize to (same rule, no image needed)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    return smart_resize(height, width, factor=PATCH_FACTOR, min_pixels=min_pixels, max_pixels=max_pixels)


def visual_tokens(height: int, width: int, min_pixels: int, max_pixels: int) -> int:
    """Visual tokens an image of this size costs in the LM sequence (after the 2x2 merge)."""
    h, w = smart_resize_hw(height, width, min_pixels, max_pixels)
    return (h // PATCH_FACTOR) * (w // PATCH_FACTOR)


def max_visual_tokens(max_pixels: int) -> int:
    """Visual tokens of the largest image ``max_pixels`` allows (after the 2x2 merge)."""
    return max_pixels // (PATCH_FACTOR * PATCH_FACTOR)


def max_sequence_tokens(
    processor: Any, prompt: JudgePrompt, *, answer: str | None = None, max_pixels: int | None = None
) -> int:
    """The longest judge sequence: the chat text (the prompt, then the answer turn when given, else the generation
    prompt) with its one image placeholder token expanded to the visual tokens of the largest image ``max_pixels``
    (default: the processor's bound) allows. Training checks max_length against it; the server's
    --max-model-len is built from it."""
    if max_pixels is None:
        _, max_pixels = pixel_bounds(processor)
    if answer is None:
        text = processor.apply_chat_template(hf_messages(prompt), add_generation_prompt=True, tokenize=False)
    else:
        text = processor.apply_chat_template(hf_messages(prompt, answer), tokenize=False)
    text_tokens = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
    return text_tokens - 1 + max_visual_tokens(max_pixels)


def load_processor(
    name_or_path: str | Path, *, min_pixels: int | None = None, max_pixels: int | None = None, **kwargs: Any
):
    """AutoProcessor with explicit pixel bounds (the saved ones when not given)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(name_or_path), **kwargs)
    if not hasattr(processor, "image_processor"):
        raise TypeError(
            f"AutoProcessor.from_pretrained({str(name_or_path)!r}) returned {type(processor).__name__}, not a "
            "multimodal processor: the model directory lacks preprocessor_config.json"
        )
    set_pixel_bounds(processor, min_pixels=min_pixels, max_pixels=max_pixels)
    return processor


def set_pixel_bounds(processor: Any, *, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
    image_processor = processor.image_processor
    size = dict(image_processor.size)
    if min_pixels is not None:
        size["shortest_edge"] = int(min_pixels)
    if max_pixels is not None:
        size["longest_edge"] = int(max_pixels)
    if size["shortest_edge"] > size["longest_edge"]:
        raise ValueError(f"min_pixels {size['shortest_edge']} exceeds max_pixels {size['longest_edge']}")
    image_processor.size = size
    # Older code paths read these attributes directly.
    for attr, key in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
        if hasattr(image_processor, attr):
            setattr(image_processor, attr, size[key])


def pixel_bounds(processor: Any) -> tuple[int, int]:
    size = processor.image_processor.size
    return int(size["shortest_edge"]), int(size["longest_edge"])


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    if dtype in (None, "auto"):
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, dtype)


class PatchProjection(torch.nn.Conv3d):
    """Qwen2-VL's patch-embedding convolution computed as the matmul it is.

    Its kernel equals its stride and each input row is exactly one kernel-sized patch (PatchEmbed views the
    pixel rows so), so the convolution is one linear map of the flattened patch: the same parameters (state-dict
    keys and shapes unchanged) and the same result, without CPU conv3d's overhead (~3x slower for this shape)."""

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if tuple(patches.shape[2:]) != tuple(self.kernel_size):
            raise ValueError(f"PatchProjection takes kernel-sized patches {self.kernel_size}, got {patches.shape}")
        flat = patches.reshape(patches.shape[0], -1)
        out = torch.nn.functional.linear(flat, self.weight.reshape(self.out_channels, -1), self.bias)
        return out.view(patches.shape[0], self.out_channels, 1, 1, 1)


def use_matmul_patch_embedding(model: Any) -> int:
    """Turn each Qwen2-VL patch embedding's Conv3d into a PatchProjection in place (the same module and
    parameters, only its forward changes); returns how many."""
    count = 0
    for name, module in model.named_modules():
        proj = getattr(module, "proj", None)
        if name.endswith("patch_embed") and type(proj) is torch.nn.Conv3d:
            if proj.kernel_size != proj.stride or proj.padding != (0, 0, 0) or proj.groups != 1:
                continue
            proj.__class__ = PatchProjection  # keeps the parameters, hooks and device of the loaded module
            count += 1
    return count


@functools.cache
def _batched_vision_attention_class() -> type:
    from transformers.models.qwen2_vl.modeling_qwen2_vl import VisionAttention, apply_rotary_pos_emb_vision

    class BatchedVisionAttention(VisionAttention):
        """Qwen2-VL's vision attention with one SDPA call over all images of a batch when they have the same
        patch count (transformers' SDPA path loops over the images, one small call per image and block: ~7 % of
        the tiny model's training step, scripts/bench_vision_attention.py). Same parameters and the same numbers;
        mixed sizes and other attention implementations take the stock forward."""

        def forward(self, hidden_states, cu_seqlens, position_embeddings=None, max_seqlen=None, **kwargs):
            lengths = cu_seqlens[1:] - cu_seqlens[:-1]
            if self.config._attn_implementation != "sdpa" or bool((lengths != lengths[0]).any()):
                return super().forward(hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs)
            seq_length, images = hidden_states.shape[0], lengths.numel()
            query, key, value = (
                self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
            )
            query, key = apply_rotary_pos_emb_vision(query, key, *position_embeddings)
            per_image = (images, seq_length // images, self.num_heads, -1)
            query, key, value = (t.reshape(per_image).transpose(1, 2) for t in (query, key, value))
            out = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=self.scaling)
            return self.proj(out.transpose(1, 2).reshape(seq_length, -1))

    return BatchedVisionAttention


def use_batched_vision_attention(model: Any) -> int:
    """Turn each Qwen2-VL VisionAttention into a BatchedVisionAttention in place (parameters untouched, only
    its forward changes); returns how many."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import VisionAttention

    batched = _batched_vision_attention_class()
    count = 0
    for module in model.modules():
        if type(module) is VisionAttention:
            module.__class__ = batched
            count += 1
    return count


def load_model(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype | None = "auto",
    attn_implementation: str | None = None,
    quantization_config: Any = None,
    device_map: Any = None,
    **kwargs: Any,
):
    """AutoModelForImageTextToText: the same call loads the tiny model and Qwen/Qwen2-VL-*-Instruct (its patch
    embedding as a PatchProjection, its vision attention batched over equal-size images)."""
    from transformers import AutoModelForImageTextToText

    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForImageTextToText.from_pretrained(str(name_or_path), dtype=resolve_dtype(dtype), **kwargs)
    use_matmul_patch_embedding(model)
    use_batched_vision_attention(model)
    return model


def build_judge_inputs(processor: Any, images: Sequence[Any], prompt: JudgePrompt | None = None):
    """Processor inputs that end at the answer position (generation prompt added), left-padded."""
    prompt = prompt or load_prompt()
    text = processor.apply_chat_template(hf_messages(prompt), add_generation_prompt=True, tokenize=False)
    tokenizer = processor.tokenizer
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # so the last position is the answer position in every row
    try:
        return processor(text=[text] * len(images), images=list(images), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = previous_side


@torch.inference_mode()
def score_images(
    model: Any,
    processor: Any,
    images: Sequence[ImageSource],
    *,
    prompt: JudgePrompt | None = None,
    batch_size: int = 4,
) -> list[float]:
    """p_defect of each image with a HF model (the reference scorer: tests, the in-process judge, HF baseline)."""
    prompt = prompt or load_prompt()
    defect_ids, clean_ids = answer_token_ids(processor.tokenizer, prompt)
    model_was_training = model.training
    model.eval()
    scores: list[float] = []
    try:
        for start in range(0, len(images), batch_size):
            batch = [load_image(img).image for img in images[start : start + batch_size]]
            inputs = build_judge_inputs(processor, batch, prompt).to(model.device)
            # logits_to_keep=1: only the answer position (a 2B model's full logits would be ~1400 x 151k per image)
            logits = model(**inputs, logits_to_keep=1).logits[:, -1, :]
            scores.extend(p_defect_from_logits(logits, defect_ids, clean_ids).tolist())
    finally:
        model.train(model_was_training)
    return scores
