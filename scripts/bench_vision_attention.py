"""Vision attention: transformers' per-image SDPA loop vs vlm_judge's batched call, one training step each.

    python scripts/bench_vision_attention.py [--model vlm_judge/embedded/assets/tiny-base-224 --batch_size 16 --steps 12]

Loads the model twice through vlm_judge.modeling.load_model (the batched attention) and turns one copy's vision
attention back into transformers' VisionAttention; both take the same batch of rendered synthetic rows through
the judge collator, forward + backward + AdamW, interleaved step by step so that the machine's load hits both
alike. Prints one JSON object: median ms per step of each, their ratio, and the largest difference of the
logits and of one gradient between the two (0 or float rounding: the same computation).
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    model: str = field(default="vlm_judge/embedded/assets/tiny-base-224", metadata={"help": "a Qwen2-VL model folder"})
    batch_size: int = field(default=16)
    image_size: int = field(default=224, metadata={"help": "synthetic rows rendered at this size, never resized"})
    steps: int = field(default=12, metadata={"help": "timed steps per variant (after 2 warm-up steps)"})
    threads: int = field(default=2)


def main(args: Args) -> dict:
    from transformers.models.qwen2_vl.modeling_qwen2_vl import VisionAttention

    from vlm_judge.embedded.synthetic.config import SyntheticConfig
    from vlm_judge.embedded.synthetic.stream import StreamCurriculum, stream_rows
    from vlm_judge.modeling import load_model, load_processor
    from vlm_judge.training.collate import JudgeDataCollator

    model_dir = Path(args.model) if Path(args.model).is_absolute() else REPO / args.model
    if not (model_dir / "config.json").is_file():
        sys.exit(f"--model {args.model!r} is not a model folder (no config.json)")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    side = args.image_size
    processor = load_processor(str(model_dir), min_pixels=side * side, max_pixels=side * side)
    rows = stream_rows(
        SyntheticConfig(num_prompts=64, num_systems=4, image_size=side, seed=0),
        StreamCurriculum(add_every=0, area_ramp_steps=0),
    )
    batch = JudgeDataCollator(processor=processor)(list(itertools.islice(rows, args.batch_size)))
    inputs = {k: v for k, v in batch.items() if not k.startswith("judge_") and k != "labels"}

    models = {"per_image": load_model(model_dir, dtype="float32"), "batched": load_model(model_dir, dtype="float32")}
    for module in models["per_image"].modules():
        if isinstance(module, VisionAttention):
            module.__class__ = VisionAttention
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-6) for name, m in models.items()}

    def step(name: str) -> tuple[float, torch.Tensor, torch.Tensor]:
        model = models[name].train()
        started = time.perf_counter()
        logits = model(**inputs, use_cache=False, logits_to_keep=1).logits
        logits.float().logsumexp(-1).mean().backward()
        grad = model.model.visual.blocks[0].attn.qkv.weight.grad.clone()
        optimizers[name].step()
        optimizers[name].zero_grad()
        return time.perf_counter() - started, logits.detach(), grad

    first = {name: step(name) for name in models}  # also the warm-up; the weights still equal here
    times: dict[str, list[float]] = {name: [] for name in models}
    for index in range(args.steps + 1):
        for name in models:
            seconds = step(name)[0]
            if index:
                times[name].append(seconds)
    ms = {name: round(1000 * statistics.median(values), 1) for name, values in times.items()}
    return {
        "model": args.model,
        "batch_size": args.batch_size,
        "patches_per_image": int(inputs["image_grid_thw"][0].prod()),
        "threads": args.threads,
        "ms_per_step": ms,
        "per_image_over_batched": round(ms["per_image"] / ms["batched"], 3),
        "max_abs_logit_difference": float((first["per_image"][1] - first["batched"][1]).abs().max()),
        "max_abs_grad_difference": float((first["per_image"][2] - first["batched"][2]).abs().max()),
    }


if __name__ == "__main__":
    from transformers import HfArgumentParser

    (arguments,) = HfArgumentParser(Args).parse_args_into_dataclasses()
    print(json.dumps(main(arguments), indent=2))
