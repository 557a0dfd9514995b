"""Build the synthetic assessor logs (the embedded default dataset) in the canonical format.

    python scripts/make_synthetic_data.py --output_dir data/synthetic [--num_prompts 64 --num_systems 4 --seed 0]

All logic lives in vlm_judge.embedded.synthetic; this is only the command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from vlm_judge.embedded.synthetic import DEFECT_TYPES, SyntheticConfig, generate_synthetic_dataset


def parse_args(argv: list[str] | None = None) -> tuple[str, SyntheticConfig, bool]:
    d = SyntheticConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", "--output_dir", required=True)
    p.add_argument("--num-prompts", "--num_prompts", type=int, default=d.num_prompts)
    p.add_argument("--num-systems", "--num_systems", type=int, default=d.num_systems)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--image-size",
        "--image_size",
        type=int,
        default=d.image_size,
        help="side of the rendered PNGs; images are rendered at this size, never resized",
    )
    p.add_argument("--votes", type=int, default=d.votes, help="simulated assessors per image")
    p.add_argument(
        "--defect-rates",
        "--defect_rates",
        type=float,
        nargs=2,
        default=d.defect_rates,
        metavar=("FIRST", "LAST"),
        help="defect rate of the first and the last system",
    )
    p.add_argument(
        "--defect-area",
        "--defect_area",
        type=float,
        nargs=2,
        default=d.defect_area,
        metavar=("LOW", "HIGH"),
        help="defect region side as a fraction of the image side",
    )
    p.add_argument("--defect-strength", "--defect_strength", type=float, default=d.defect_strength)
    p.add_argument(
        "--defect-types", "--defect_types", nargs="+", choices=DEFECT_TYPES, default=d.defect_types
    )
    p.add_argument("--false-alarm", "--false_alarm", type=float, default=d.false_alarm)
    p.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty folder not made by this script"
    )
    args = vars(p.parse_args(argv))
    output_dir, overwrite = args.pop("output_dir"), args.pop("overwrite")
    try:
        config = SyntheticConfig(**args)
    except ValueError as exc:
        p.error(str(exc))
    return output_dir, config, overwrite


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output_dir, config, overwrite = parse_args(argv)
    start = time.perf_counter()
    try:
        table = generate_synthetic_dataset(output_dir, config, overwrite=overwrite)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    rates = table.groupby("system")["label"].mean().round(3).to_dict()
    print(
        f"wrote {len(table)} images ({config.num_prompts} prompts x {config.num_systems} systems, "
        f"{config.image_size}px) to {output_dir} in {seconds:.1f}s; majority-vote defect rate per system: {rates}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
