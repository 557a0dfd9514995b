"""Experiment data: for every scene, one clean render and its defective twin (same jitter, the defect is the only
difference). Canonical format; label = ground truth (defect != none)."""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from vlm_judge.data.splits import split_by_prompt
from vlm_judge.embedded.synthetic import DEFECT_TYPES, applicable_defects, make_scene, render_generation

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--n", type=int, default=1024)
ap.add_argument("--size", type=int, default=224)
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--types", default=",".join(DEFECT_TYPES))
ap.add_argument("--area", type=float, nargs=2, default=(0.25, 0.45))
a = ap.parse_args()
out = Path(a.out)
(out / "images").mkdir(parents=True, exist_ok=True)
allowed = a.types.split(",")
rows = []
for p in range(a.n):
    scene = make_scene(np.random.default_rng([a.seed, 0, p]))
    choices = applicable_defects(scene, allowed)
    if not choices:
        continue
    drng = np.random.default_rng([a.seed, 3, p])
    defect = str(drng.choice(choices))
    for kind in ("none", defect):
        img = render_generation(scene, a.size, np.random.default_rng([a.seed, 1, p]), kind, drng, area=tuple(a.area))
        name = f"images/p{p:05d}_{kind}.png"
        img.save(out / name, compress_level=1)
        rows.append(
            {
                "image": name,
                "prompt_id": f"p{p:05d}",
                "system": "twin-" + ("clean" if kind == "none" else "defect"),
                "defect": kind,
                "label": int(kind != "none"),
            }
        )
t = split_by_prompt(pd.DataFrame(rows), fractions=(0.9, 0.1, 0.0), seed=0)
t.to_csv(out / "labels.csv", index=False)
print(len(t), t["defect"].value_counts().to_dict())
