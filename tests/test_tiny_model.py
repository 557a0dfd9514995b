import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_judge.embedded.tiny_model import CHAT_TEMPLATE_FILE
from vlm_judge.modeling import (
    NATIVE_1024_MAX_PIXELS,
    build_judge_inputs,
    load_model,
    load_processor,
    pixel_bounds,
    score_images,
    use_batched_vision_attention,
    use_matmul_patch_embedding,
    visual_tokens,
)


def _image(size=1024, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), "RGB")


def test_autoprocessor_returns_a_processor_with_native_1024_bounds(tiny_model_dir):
    from transformers import AutoProcessor, Qwen2VLProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    assert isinstance(processor, Qwen2VLProcessor)  # not a bare tokenizer
    assert pixel_bounds(processor)[1] == NATIVE_1024_MAX_PIXELS


def test_1024_image_stays_native_grid_74x74(tiny_model_dir):
    processor = load_processor(tiny_model_dir)
    inputs = build_judge_inputs(processor, [_image()])
    assert inputs["image_grid_thw"].tolist() == [[1, 74, 74]]
    image_token_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == image_token_id).sum()) == 1369
    assert visual_tokens(1024, 1024, *pixel_bounds(processor)) == 1369


def test_transformers_default_bounds_would_downscale_1024():
    # Why the bounds are set explicitly: transformers' default max_pixels shrinks a 1024^2 generation.
    from transformers import Qwen2VLImageProcessor

    default_max = Qwen2VLImageProcessor().size["longest_edge"]
    assert visual_tokens(1024, 1024, 3136, default_max) < 1369


def test_round_trip_and_loading_like_the_2b_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForImageTextToText, Qwen2VLForConditionalGeneration

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    assert isinstance(model, Qwen2VLForConditionalGeneration)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    use_matmul_patch_embedding(model)  # as load_model does: the scores below are then bit-equal
    use_batched_vision_attention(model)
    processor = load_processor(tiny_model_dir)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded, reprocessor = load_model(tmp_path), load_processor(tmp_path)
    for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    images = [_image(256, 1), _image(256, 2)]
    assert score_images(model, processor, images) == pytest.approx(score_images(reloaded, reprocessor, images), abs=0)


def test_patch_projection_is_the_patch_convolution(tiny_model_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    from vlm_judge.modeling import PatchProjection

    plain = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    fast = load_model(tiny_model_dir)
    conv, proj = plain.model.visual.patch_embed.proj, fast.model.visual.patch_embed.proj
    assert type(conv) is torch.nn.Conv3d and type(proj) is PatchProjection
    assert use_matmul_patch_embedding(fast) == 0  # already swapped: nothing left to do
    assert list(plain.state_dict()) == list(fast.state_dict())

    width = conv.in_channels * int(np.prod(conv.kernel_size))
    pixels = torch.randn(512, width, generator=torch.Generator().manual_seed(0))
    outputs = []
    for model in (plain, fast):
        embed = model.model.visual.patch_embed
        out = embed(pixels)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append((out.detach(), embed.proj.weight.grad.clone()))
    assert outputs[0][0].shape == outputs[1][0].shape == (512, conv.out_channels)
    assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-5)
    assert torch.allclose(outputs[0][1], outputs[1][1], atol=1e-4)
    with pytest.raises(ValueError, match="kernel-sized patches"):
        proj(torch.zeros(2, conv.in_channels, 4, 14, 14))

    fast.save_pretrained(tmp_path)  # the checkpoint is the same format: a plain load reads it back
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(reloaded.model.visual.patch_embed.proj) is torch.nn.Conv3d
    assert torch.equal(reloaded.model.visual.patch_embed.proj.weight, proj.weight)


def test_chat_template_is_qwen2_vl_and_yes_no_are_single_tokens(tiny_model_dir):
    import trl

    trl_template = Path(trl.__file__).parent / "chat_templates" / "qwen2_5_vl.jinja"
    assert CHAT_TEMPLATE_FILE.read_text() == trl_template.read_text()  # byte-identical to Qwen2-VL's
    processor = load_processor(tiny_model_dir)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]},
         {"role": "assistant", "content": [{"type": "text", "text": "No"}]}],
        tokenize=False,
    )
    assert text.endswith("<|im_start|>assistant\nNo<|im_end|>\n")
    ids = processor.tokenizer.encode("assistant\nNo<|im_end|>", add_special_tokens=False)
    assert processor.tokenizer.convert_ids_to_tokens(ids)[-2:] == ["No", "<|im_end|>"]


def test_scores_are_probabilities_and_depend_on_the_image(tiny_model_dir):
    model, processor = load_model(tiny_model_dir), load_processor(tiny_model_dir)
    scores = score_images(model, processor, [_image(224, 0), _image(224, 0), _image(224, 5)], batch_size=2)
    assert all(0.0 < s < 1.0 for s in scores)
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)  # batching/padding does not change a score
    assert scores[0] != scores[2]


def test_spec_is_saved(tiny_model_dir):
    spec = json.loads((Path(tiny_model_dir) / "tiny_model_spec.json").read_text())
    assert spec["max_pixels"] == NATIVE_1024_MAX_PIXELS and spec["seed"] == 0


@pytest.mark.parametrize("sides", [(224, 224, 224), (224, 280, 168)], ids=["equal-size", "mixed-size"])
def test_batched_vision_attention_is_the_per_image_attention(tiny_model_dir, sides):
    from transformers import AutoModelForImageTextToText
    from transformers.models.qwen2_vl.modeling_qwen2_vl import VisionAttention

    plain = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    fast = load_model(tiny_model_dir)
    blocks = len(fast.model.visual.blocks)
    assert all(type(block.attn) is not VisionAttention for block in fast.model.visual.blocks)
    assert use_batched_vision_attention(fast) == 0 and use_batched_vision_attention(plain) == blocks
    for block in plain.model.visual.blocks:
        block.attn.__class__ = VisionAttention  # back to transformers' per-image loop

    processor = load_processor(tiny_model_dir)
    inputs = build_judge_inputs(processor, [_image(side, seed) for seed, side in enumerate(sides)])
    results = []
    for model in (plain, fast):
        logits = model(**inputs, logits_to_keep=1).logits
        logits.sum().backward()
        results.append((logits.detach(), model.model.visual.blocks[0].attn.qkv.weight.grad.clone()))
    (plain_logits, plain_grad), (fast_logits, fast_grad) = results
    assert plain_logits.shape == (len(sides), 1, plain.config.text_config.vocab_size)
    assert torch.allclose(plain_logits, fast_logits, atol=1e-5)
    assert torch.allclose(plain_grad, fast_grad, atol=1e-6 * float(plain_grad.abs().max()) + 1e-9)
