"""The embedded default model: a tiny, randomly initialised Qwen2-VL that loads through the same
AutoProcessor / AutoModelForImageTextToText.from_pretrained code as Qwen/Qwen2-VL-2B-Instruct.

Everything is built locally (no hub access): a byte-level BPE tokenizer trained on a small corpus with
Qwen2-VL's pre-tokenizer, special tokens and exact chat template; a Qwen2VLProcessor whose pixel bounds keep a
1024x1024 image native; seeded random weights of a few MB.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vlm_judge.modeling import DEFAULT_MIN_PIXELS, NATIVE_1024_MAX_PIXELS
from vlm_judge.protocol import answer_token_ids, load_prompt

CHAT_TEMPLATE_FILE = Path(__file__).resolve().parent / "assets" / "qwen2_vl_chat_template.jinja"

# Qwen2-VL's special tokens, in the order the real tokenizer adds them after the BPE vocabulary.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

_CORPUS_WORDS = """
the a an of to and in is are this that image images picture photo generation generated AI visible defect defects
broken anatomy melted warped objects object artifact artifacts garbled text noise smear smears seam seams answer
Yes No yes no YES NO Does does have has with such as or you a meticulous quality assessor system user assistant
helpful hand hands face faces eye eyes finger fingers cat dog person people sky tree trees house car road water
red green blue yellow white black grey colour color light dark bright blur blurry sharp clean clear good bad
reply JSON only exactly form number from short names see probability true false
""".split()


@dataclass
class TinyModelSpec:
    vocab_size: int = 640  # BPE merges on top of the 256 byte symbols
    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 512
    vision_depth: int = 2
    vision_embed: int = 64
    vision_heads: int = 4
    min_pixels: int = DEFAULT_MIN_PIXELS
    max_pixels: int = NATIVE_1024_MAX_PIXELS
    seed: int = 0
    # > 0: the vision tower's and the LM layers' weights are drawn from N(0, init_gain / sqrt(fan_in)) instead of
    # transformers' N(0, 0.02), which is tuned for 1k-wide layers: at 64-128 wide it leaves every GELU in its
    # linear range and the tiny judge on the ln 2 plateau (experiments/LOG.md). 0 keeps the default.
    init_gain: float = 0.0


def _corpus() -> list[str]:
    prompt = load_prompt()
    lines = [prompt.system, prompt.user] + [" ".join(_CORPUS_WORDS)]
    # Repeat the answer words so BPE merges each into one token, alone (as the assistant turn starts) and with
    # a leading space.
    lines += ["Yes No yes no Yes. No. Yes, No, YES NO" for _ in range(200)]
    lines += [word for _ in range(200) for word in ("Yes", "No", "yes", "no", "YES", "NO")]
    return lines * 20


def build_tokenizer(spec: TinyModelSpec):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]

    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        errors="replace",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE_FILE.read_text(encoding="utf-8")
    return tokenizer


def build_processor(tokenizer, spec: TinyModelSpec):
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    size = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=tokenizer.chat_template,
    )


def build_config(tokenizer, spec: TinyModelSpec):
    from transformers import Qwen2VLConfig

    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    head_dim = spec.text_hidden // spec.text_heads
    # M-RoPE splits the rotary half-dimension into (temporal, height, width) sections, as 16/24/24 of 64 in 2B.
    half = head_dim // 2
    mrope_section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    return Qwen2VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": spec.text_hidden,
            "intermediate_size": spec.text_intermediate,
            "num_hidden_layers": spec.text_layers,
            "num_attention_heads": spec.text_heads,
            "num_key_value_heads": spec.text_kv_heads,
            "max_position_embeddings": 8192,
            "max_window_layers": spec.text_layers,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": spec.vision_depth,
            "embed_dim": spec.vision_embed,
            "hidden_size": spec.text_hidden,  # the merger projects into the LM width
            "num_heads": spec.vision_heads,
            "mlp_ratio": 4,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def fan_in_init(model, gain: float) -> None:
    """Redraw the vision tower's and the LM layers' Linear/Conv3d weights from N(0, gain / sqrt(fan_in)), zero
    biases; the token embeddings (tied to the LM head) keep their init."""
    import torch

    with torch.no_grad():
        for root in (model.model.visual, model.model.language_model.layers):
            for module in root.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d)):
                    module.weight.normal_(0.0, gain / module.weight[0].numel() ** 0.5)
                    if module.bias is not None:
                        module.bias.zero_()


def make_tiny_model(output_dir: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Build and save the tiny model, tokenizer and processor; returns the directory."""
    import torch
    from transformers import GenerationConfig, Qwen2VLForConditionalGeneration

    spec = spec or TinyModelSpec()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(spec)
    answer_token_ids(tokenizer)  # fails loudly if Yes/No are not single tokens
    processor = build_processor(tokenizer, spec)
    config = build_config(tokenizer, spec)

    torch.manual_seed(spec.seed)
    model = Qwen2VLForConditionalGeneration(config).to(torch.float32).eval()
    if spec.init_gain:
        fan_in_init(model, spec.init_gain)
    model.generation_config = GenerationConfig(
        bos_token_id=config.text_config.bos_token_id,
        eos_token_id=[config.text_config.eos_token_id, config.text_config.bos_token_id],
        pad_token_id=config.text_config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    (output_dir / "tiny_model_spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return output_dir
