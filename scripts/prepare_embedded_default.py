"""The main job's prepare stage: put the recipe's tiny base model in --model_dir and render the synthetic assessor
logs it names (its `tiny_model` and `synthetic` sections), with the same code recipes/sft.py uses on first use.

The base is the recipe's `model_name_or_path` when that folder exists (the committed, label-free pretrained tiny
base; its spec is checked against `tiny_model`), copied; otherwise the random-init model of the `tiny_model` spec.

    python scripts/prepare_embedded_default.py --config recipes/tiny-cpu.yaml --model_dir models/tiny-base
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="recipe YAML with tiny_model, synthetic and dataset_dir")
    parser.add_argument("--model-dir", "--model_dir", required=True, help="where the tiny base model goes")
    args = parser.parse_args()
    recipe = yaml.safe_load(Path(args.config).read_text())
    missing = [key for key in ("tiny_model", "synthetic", "dataset_dir") if key not in recipe]
    if missing:
        parser.error(f"{args.config} lacks {', '.join(missing)}: it is not an embedded-default recipe")
    # Imported after the argument check: vlm_judge.training pulls in TRL (seconds).
    from vlm_judge.embedded import tiny_model_dir
    from vlm_judge.embedded.synthetic import generate_synthetic_dataset

    source = recipe.get("model_name_or_path")
    if source and Path(source).is_dir() and Path(source).resolve() != Path(args.model_dir).resolve():
        tiny_model_dir(recipe["tiny_model"], source)  # the committed base must have the recipe's architecture
        shutil.rmtree(args.model_dir, ignore_errors=True)
        shutil.copytree(source, args.model_dir)
        print(f"[prepare] tiny base model: {args.model_dir} (copy of {source})")
    else:
        model = tiny_model_dir(recipe["tiny_model"], args.model_dir)
        print(f"[prepare] tiny base model: {model} (random init)")
    table = generate_synthetic_dataset(recipe["dataset_dir"], overwrite=True, **recipe["synthetic"])
    print(f"[prepare] synthetic assessor logs: {len(table)} images in {recipe['dataset_dir']}")


if __name__ == "__main__":
    main()
