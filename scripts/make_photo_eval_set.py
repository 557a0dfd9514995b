"""Build the real-photograph evaluation set (clean/defective pairs, canonical format) of the embedded default.

    python scripts/make_photo_eval_set.py --output-dir /tmp/photo_eval [--size 224 --per-photo 14 --seed 0]

Real photographs that ship inside scikit-image and scikit-learn, each crop once clean and once with a local
defect made by albumentations (a code path of its own, never the training renderer); every row has split = test:
the set never enters training. The sources, transforms, visibility checks and columns are described in
vlm_judge/embedded/photos.py.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from vlm_judge.embedded.photos import PHOTOS, build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", "--output_dir", required=True)
    p.add_argument("--size", type=int, default=224, help="side of the square output images (px)")
    p.add_argument(
        "--per-photo", "--per_photo", type=int, default=14, help="crops (clean/defect pairs) per photo"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--photos", nargs="+", choices=sorted(PHOTOS), default=None, help="default: all")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty folder not made by this script"
    )
    args = p.parse_args(argv)
    try:
        table = build(
            args.output_dir,
            size=args.size,
            per_photo=args.per_photo,
            seed=args.seed,
            photos=args.photos,
            overwrite=args.overwrite,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"make_photo_eval_set: {exc}", file=sys.stderr)
        return 2
    counts = Counter(table.loc[table["label"] == 1, "defect"])
    print(
        f"wrote {len(table)} images ({len(table) // 2} pairs) to {args.output_dir}: "
        + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
