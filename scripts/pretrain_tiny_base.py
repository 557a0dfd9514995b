"""Pretrain the embedded default's tiny Qwen2-VL label-free and save the base the CPU recipe fine-tunes.

    python scripts/pretrain_tiny_base.py --config recipes/tiny-cpu.yaml --output_dir /tmp/stage1
    python scripts/pretrain_tiny_base.py --config recipes/tiny-cpu.yaml --base /tmp/stage1 --data_seed 456 \
        --kinds noise,blur,posterize,jpeg,pixelate,displace,motion_blur,elastic,clone --steps 6000 --output_dir OUT

Starts from the recipe's tiny Qwen2-VL (its `tiny_model` spec, random init), or continues an earlier stage's folder
(`--base`), and trains the vision tower + merger on dense corruption prediction (vlm_judge.embedded.pretrain: which
generic PIL corruption covers each visual token of a clean synthetic scene; no defect renderer, no assessor
labels; the language model stays at its init). Saves a model folder that loads through from_pretrained like any
Qwen2-VL, with `tiny_model_spec.json` (the architecture the recipe checks) and `pretraining.json` (this stage's
command, arguments, wall time, evaluation log and the weights' sha256, with the base's own record nested under
`base`). Deterministic for a given torch build: the same arguments give the same weights.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser


@dataclass
class PretrainArgs:
    config: str = field(metadata={"help": "recipe YAML whose tiny_model spec and pixel bounds the base gets"})
    output_dir: str = field(metadata={"help": "where the pretrained base goes"})
    base: str = field(default="", metadata={"help": "continue this pretrained folder (default: random init)"})
    kinds: str = field(default="", metadata={"help": "comma-separated corruption kinds (default: the first six)"})
    steps: int = field(default=16000, metadata={"help": "optimizer steps (each a batch of new images)"})
    learning_rate: float = 1e-3
    decay_steps: int = field(default=0, metadata={"help": "cosine decay of the learning rate to 0 over the last N steps"})
    batch_size: int = 16
    seed: int = field(default=0, metadata={"help": "torch seed (the throw-away token head)"})
    data_seed: int = field(default=123, metadata={"help": "seed of the scene and corruption stream"})
    eval_every: int = 100
    save_steps: int = field(default=0, metadata={"help": "also save OUTPUT_DIR-step<N> every N steps (0: off)"})
    threads: int = 2


def main() -> None:
    (args,) = HfArgumentParser(PretrainArgs).parse_args_into_dataclasses()
    recipe = yaml.safe_load(Path(args.config).read_text())
    if "tiny_model" not in recipe:
        sys.exit(f"{args.config} has no tiny_model section: only the embedded default's base is pretrained here")
    spec = dict(recipe["tiny_model"])
    side = int(spec.get("max_pixels", 0) ** 0.5)
    if spec.get("min_pixels") != spec.get("max_pixels") or side * side != spec["max_pixels"]:
        sys.exit(f"{args.config}: tiny_model min_pixels/max_pixels must both be one square image size, got {spec}")

    import torch

    from vlm_judge.embedded import tiny_model_dir
    from vlm_judge.embedded.pretrain import FIRST_KINDS, check_kinds, pretrain_vision_tower
    from vlm_judge.images import file_sha256
    from vlm_judge.modeling import load_model, load_processor

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip()) or FIRST_KINDS
    try:
        check_kinds(kinds)
    except ValueError as exc:
        sys.exit(f"--kinds: {exc}")
    if args.base and not (Path(args.base) / "config.json").is_file():
        sys.exit(f"--base {args.base!r} is not a model folder (no config.json)")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        # tiny_model_dir builds the random-init model, or checks that --base has the recipe's architecture.
        base = tiny_model_dir(spec, args.base or str(Path(tmp) / "base"))
        processor = load_processor(str(base), min_pixels=side * side, max_pixels=side * side)
        torch.manual_seed(args.seed)
        model = load_model(str(base), dtype="float32")
        spec_text = (base / "tiny_model_spec.json").read_text()
        base_record_file = base / "pretraining.json"
        base_record = json.loads(base_record_file.read_text()) if args.base and base_record_file.is_file() else None

    what = (
        f"tiny Qwen2-VL, vision tower + merger pretrained on dense generic-corruption prediction ({', '.join(kinds)};"
        " vlm_judge.embedded.pretrain), language model at its random init; no defect renderer, no assessor labels"
    )
    started = time.time()

    def save(folder: Path, log_rows: list[dict], steps_done: int) -> None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        (folder / "tiny_model_spec.json").write_text(spec_text)
        metadata = {
            "what": what if base_record is None else f"{what}; continues: {args.base}",
            "command": "python scripts/pretrain_tiny_base.py " + " ".join(sys.argv[1:]),
            "arguments": {**asdict(args), "steps_done": steps_done},
            "recipe_tiny_model": spec,
            "wall_seconds": round(time.time() - started),
            "torch": torch.__version__,
            "threads": args.threads,
            "log": log_rows,
            "model_sha256": file_sha256(folder / "model.safetensors"),
            "base": base_record,
        }
        (folder / "pretraining.json").write_text(json.dumps(metadata, indent=2) + "\n")

    rows: list[dict] = []

    def on_eval(row: dict) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)

    def on_step(step: int) -> None:
        if args.save_steps and step % args.save_steps == 0 and step < args.steps:
            save(Path(f"{args.output_dir}-step{step}"), list(rows), step)

    pretrain_vision_tower(
        model,
        processor,
        steps=args.steps,
        image_size=side,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        data_seed=args.data_seed,
        kinds=kinds,
        decay_steps=args.decay_steps,
        eval_every=args.eval_every,
        on_eval=on_eval,
        on_step=on_step,
    )
    output = Path(args.output_dir)
    if output.exists():
        shutil.rmtree(output)
    save(output, rows, args.steps)
    print(f"pretrained tiny base saved to {output} ({rows[-1] if rows else 'no evaluation'})")


if __name__ == "__main__":
    main()
