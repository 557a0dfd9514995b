"""Writing the dataset: the render loop over (prompt, system), labels.csv, meta.json and README.md."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from vlm_judge.data.splits import split_by_prompt

from .assessors import _rng, assessor_votes, plan_defects
from .config import SyntheticConfig
from .defects import applicable_defects, render_generation
from .scene import Scene, make_scene

GENERATOR = "vlm_judge.embedded.synthetic"
GENERATOR_VERSION = "1"
# A prompt whose scene can show none of the allowed defect types is drawn again (only when one of its images
# must carry a defect); this many draws without one mean the allowed types fit (almost) no scene.
MAX_SCENE_DRAWS = 100


def scene_for_prompt(config: SyntheticConfig, prompt: int, needs_defect: bool) -> tuple[Scene, list[str]]:
    """The scene of ``prompt`` and the defects it can show (applicable_defects of ``config.defect_types``).

    The scene is ``make_scene`` of the prompt's own stream. When ``needs_defect`` and that scene can show none
    of the allowed types (``defect_types=("broken_grid",)`` and a scene without a grid), the scene is drawn
    again from the streams (prompt, 1), (prompt, 2), ... until one can, so every planned defect is rendered and
    each system keeps exactly its planned defect count. Runs where that never happens are unchanged.
    """
    scene = make_scene(_rng(config, 0, prompt))
    choices = applicable_defects(scene, config.defect_types)
    draw = 0
    while needs_defect and not choices:
        draw += 1
        if draw >= MAX_SCENE_DRAWS:
            raise ValueError(
                f"no scene in {MAX_SCENE_DRAWS} draws can show any of defect_types={config.defect_types}"
            )
        scene = make_scene(_rng(config, 0, prompt, draw))
        choices = applicable_defects(scene, config.defect_types)
    return scene, choices


def generate_synthetic_dataset(
    output_dir: str | Path, config: SyntheticConfig | None = None, *, overwrite: bool = False, **overrides
) -> pd.DataFrame:
    """Render the dataset into ``output_dir`` (canonical format) and return its label table.

    ``overrides`` are SyntheticConfig fields. An existing folder made by this generator is replaced; any other
    non-empty folder is refused unless ``overwrite`` (then only ``images/``, the label tables and our
    meta.json/README.md are replaced). A prompt with a planned defect whose scene can show none of
    ``defect_types`` gets its scene drawn again (scene_for_prompt).
    """
    config = SyntheticConfig(**{**asdict(config or SyntheticConfig()), **overrides})
    out = Path(output_dir)
    prepare_output_folder(out, overwrite)
    images = out / "images"
    images.mkdir(parents=True)

    plan = plan_defects(config)
    systems = config.system_names()
    records = []
    for p in range(config.num_prompts):
        scene, choices = scene_for_prompt(config, p, any(plan[(p, k)] for k in range(len(systems))))
        for k, system in enumerate(systems):
            defect_rng = _rng(config, 3, p, k)
            defect = str(defect_rng.choice(choices)) if plan[(p, k)] else "none"
            image = render_generation(
                scene,
                config.image_size,
                _rng(config, 1, p, k),
                defect,
                defect_rng,
                area=config.defect_area,
                strength=config.defect_strength,
            )
            name = f"images/p{p:04d}_{system}.png"
            image.save(out / name, format="PNG", compress_level=1)  # level 1: ~3x faster, files ~30 % larger
            votes = assessor_votes(config, p, k, defect)
            records.append(
                {
                    "image": name,
                    "prompt_id": f"p{p:04d}",
                    "system": system,
                    "prompt": scene.prompt,
                    "defect": defect,
                    "defect_votes": votes,
                    "total_votes": config.votes,
                    "label": int(votes / config.votes >= 0.5),
                }
            )
    table = split_by_prompt(
        pd.DataFrame.from_records(records), fractions=config.split_fractions, seed=config.seed
    )
    table.to_csv(out / "labels.csv", index=False, lineterminator="\n")
    _write_meta(out, config, table)
    return table


def prepare_output_folder(out: Path, overwrite: bool, generator: str = GENERATOR) -> None:
    """Make ``out`` ready for a generated dataset: an empty or missing folder, or one whose meta.json names
    ``generator`` (its images/, label tables, meta.json and README.md are removed); any other non-empty folder is
    refused unless ``overwrite``."""
    if out.exists() and any(out.iterdir()):
        meta = out / "meta.json"
        ours = False
        if meta.is_file():
            try:
                ours = json.loads(meta.read_text()).get("generator") == generator
            except (ValueError, OSError):
                ours = False
        if not ours and not overwrite:
            raise FileExistsError(
                f"{out} is not empty and was not made by {generator}; pass overwrite=True (--overwrite)"
            )
        shutil.rmtree(out / "images", ignore_errors=True)
        for name in ("labels.csv", "labels.jsonl", "labels.parquet", "meta.json", "README.md"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_meta(out: Path, config: SyntheticConfig, table: pd.DataFrame) -> None:
    by_system = table.groupby("system")
    summary = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "images": len(table),
        "design_defect_rate": dict(zip(config.system_names(), config.system_rates(), strict=True)),
        "defect_rate": {s: float((g["defect"] != "none").mean()) for s, g in by_system},
        "label_rate": {s: float(g["label"].mean()) for s, g in by_system},
        "defects": {str(k): int(v) for k, v in table["defect"].value_counts().sort_index().items()},
        "splits": {str(k): int(v) for k, v in table.groupby("split")["prompt_id"].nunique().items()},
    }
    (out / "meta.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "README.md").write_text(
        "# Synthetic assessor logs\n\n"
        f"Made by `{GENERATOR}` (version {GENERATOR_VERSION}): procedurally rendered scenes, "
        f"{config.num_prompts} prompts x {config.num_systems} systems at {config.image_size}x{config.image_size} px, "
        f"seed {config.seed}. Generator arguments and per-system rates: `meta.json`.\n\n"
        "`labels.csv` columns: `image` (relative path), `prompt_id`, `system`, `prompt` (scene description), "
        "`defect` (injected defect type or `none`: the ground truth), `defect_votes` / `total_votes` "
        "(simulated assessors), `label` (majority vote, 1 = defective), `split` (grouped by prompt).\n"
    )
