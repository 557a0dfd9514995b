"""Training throughput: recipes/sft.py's stack vs TRL's plain sft_vlm.py-style setup, same tiny model and data.

    python scripts/bench_train.py [--steps 40 --warmup_steps 5 --batch_size 8 --image_size 224 --threads 2]

Prints one JSON object: per variant samples/s (timed steps after the warm-up, training loop only), peak RSS of
the training process, final loss; plus judge/TRL ratios (goal: samples/s ratio >= 1.0).

- judge: JudgeSFTTrainer + JudgeDataCollator (answer-only labels, the Yes/No answer loss on the labelled
  positions only), exactly what recipes/sft.py trains with, on the rows of vlm_judge.data.load_judge_dataset.
- trl:   SFTTrainer as in TRL's examples/scripts/sft_vlm.py: a `messages` + `images` dataset, TRL's own collator
  and loss (assistant_only_loss=True so both learn the same tokens), the processor as processing_class.

Each variant runs in its own process (clean peak RSS), one after the other. On a shared machine the numbers move
with the other load; compare the ratio, and rerun when in doubt.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Args:
    steps: int = field(default=40, metadata={"help": "optimizer steps per variant"})
    warmup_steps: int = field(default=5, metadata={"help": "steps excluded from the timing"})
    batch_size: int = field(default=8)
    image_size: int = field(default=224, metadata={"help": "synthetic images rendered and trained at this size"})
    num_prompts: int = field(default=48)
    threads: int = field(default=2, metadata={"help": "torch threads per variant"})
    workdir: str | None = field(default=None, metadata={"help": "where model/data go (default: a temp dir)"})
    variant: str | None = field(default=None, metadata={"help": "internal: run one variant (judge|trl)"})


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _timing_callback(warmup: int):
    from transformers import TrainerCallback

    class Timing(TrainerCallback):
        def __init__(self) -> None:
            self.start: float | None = None
            self.end: float | None = None
            self.steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == warmup:
                self.start = time.perf_counter()
            elif state.global_step > warmup:
                self.end = time.perf_counter()
                self.steps = state.global_step - warmup

    return Timing()


def _config(args: Args, out: str):
    from trl import SFTConfig

    return SFTConfig(
        output_dir=out,
        max_length=None,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        per_device_train_batch_size=args.batch_size,
        learning_rate=5e-4,
        max_steps=args.steps,
        logging_steps=args.steps,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )


def run_variant(args: Args, model_dir: str, data_dir: str) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from vlm_judge.data import load_judge_dataset
    from vlm_judge.modeling import load_model, load_processor
    from vlm_judge.protocol import hf_messages, load_prompt

    bounds = {"min_pixels": args.image_size**2, "max_pixels": args.image_size**2}
    processor = load_processor(model_dir, **bounds)
    train = load_judge_dataset(data_dir, split="train", min_side=64)
    prompt = load_prompt()
    timing = _timing_callback(args.warmup_steps)
    out = tempfile.mkdtemp(prefix=f"bench-{args.variant}-")
    config = _config(args, out)

    if args.variant == "judge":
        from vlm_judge.training import JudgeDataCollator, JudgeSFTTrainer, prepare_split

        config.remove_unused_columns = False
        trainer = JudgeSFTTrainer(
            model=load_model(model_dir, dtype="float32"),
            args=config,
            data_collator=JudgeDataCollator(processor=processor),
            train_dataset=prepare_split(train),
            processing_class=processor,
            callbacks=[timing],
        )
    elif args.variant == "trl":
        from datasets import Image, Sequence
        from trl import SFTTrainer

        # sft_vlm.py's data shape: a conversational `messages` column and an `images` column.
        def to_messages(row):
            answer = prompt.answer_word(bool(row["label"]))
            return {"messages": hf_messages(prompt, answer), "images": [row["image"]]}

        dataset = train.map(to_messages, remove_columns=train.column_names)
        dataset = dataset.cast_column("images", Sequence(Image()))
        config.assistant_only_loss = True
        trainer = SFTTrainer(
            model=load_model(model_dir, dtype="float32"),
            args=config,
            train_dataset=dataset,
            processing_class=processor,
            callbacks=[timing],
        )
    else:
        raise ValueError(f"unknown variant {args.variant!r}")

    result = trainer.train()
    seconds = (timing.end or 0) - (timing.start or 0)
    samples = timing.steps * args.batch_size
    return {
        "variant": args.variant,
        "samples_per_s": samples / seconds if seconds > 0 else None,
        "timed_steps": timing.steps,
        "timed_seconds": round(seconds, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "train_loss": result.training_loss,
        "torch_threads": torch.get_num_threads(),
    }


def prepare(args: Args, workdir: Path) -> tuple[str, str]:
    from vlm_judge.embedded.synthetic import generate_synthetic_dataset
    from vlm_judge.embedded.tiny_model import TinyModelSpec, make_tiny_model

    model_dir, data_dir = workdir / "tiny-model", workdir / f"synthetic-{args.image_size}"
    if not (model_dir / "config.json").is_file():
        make_tiny_model(model_dir, TinyModelSpec())
    if not (data_dir / "labels.csv").is_file():
        generate_synthetic_dataset(data_dir, num_prompts=args.num_prompts, num_systems=4, image_size=args.image_size)
    return str(model_dir), str(data_dir)


def main() -> None:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(Args).parse_args_into_dataclasses()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-train-"))
    model_dir, data_dir = prepare(args, workdir)
    if args.variant:
        print("BENCH_RESULT " + json.dumps(run_variant(args, model_dir, data_dir)), flush=True)
        return

    results = {}
    for variant in ("judge", "trl"):
        cmd = [sys.executable, __file__, "--variant", variant, "--workdir", str(workdir)]
        for name in ("steps", "warmup_steps", "batch_size", "image_size", "num_prompts", "threads"):
            cmd += [f"--{name}", str(getattr(args, name))]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"variant {variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        results[variant] = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    judge, trl = results["judge"], results["trl"]
    report = {
        "setup": {
            "model": "tiny Qwen2-VL (vlm_judge.embedded.tiny_model defaults)",
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup_steps": args.warmup_steps,
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "load_average_1m": os.getloadavg()[0],
        },
        "judge": judge,
        "trl": trl,
        "samples_per_s_ratio": judge["samples_per_s"] / trl["samples_per_s"],
        "peak_rss_ratio": judge["peak_rss_mb"] / trl["peak_rss_mb"],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
