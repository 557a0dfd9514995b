"""The real-photograph evaluation set of the embedded default (clean/defective pairs) in the canonical format,
built by `python scripts/make_photo_eval_set.py --output-dir DIR [--size 224 --per-photo 14 --seed 0]`.

An out-of-distribution check of the judge: real photographs instead of the procedural scenes, and defects made
by a code path of their own (albumentations transforms), not by the training renderer
(vlm_judge/embedded/synthetic/) nor by the pretraining experiments' corruptions (experiments/corruptions.py). **This set never enters training**: every row
has split = test.

Source photos ship inside the installed wheels (no download): scikit-image's bundled ``skimage.data`` images
(astronaut, camera, chelsea, coffee, rocket, coins, the left view of stereo_motorcycle) and scikit-learn's
sample images (china, flower). Greyscale photos (camera, coins) are stacked to RGB. Left out: the microscopy
image (immunohistochemistry: its dense texture hid warps completely at 224 px), textures (brick, grass, gravel),
drawings and scans, and the photos with large black areas (hubble_deep_field, retina, moon).

From each photo ``--per_photo`` random square crops are taken (side 50-95 % of the photo's short side, never
below ``--size`` when the photo allows) and resized to ``--size`` (the *clean* crop only). Each crop is one
prompt and gets two images: system ``photo-clean`` (label 0, defect ``none``) and system ``photo-defect``
(label 1). The defect is made at the final resolution, so no resize averages it away: an albumentations
transform is applied to the whole resized crop and only a local region is pasted back -- a square box whose
side is 25-45 % of the image side (as in the synthetic logs), placed on detailed content (on smooth content
for noise_burst and banding, which busy texture hides), with a soft-edged blob mask inside the box (a
hard-edged rectangle for ``seam``, whose point is the discontinuity). Pixels outside the box are exactly the
clean pixels. A crop of almost nothing (plain sky) is drawn again. Defect types use the synthetic names so per-type metrics line up:

- ``noise_burst``  GaussNoise or ISONoise
- ``smear``        MotionBlur
- ``warp``         GridDistortion or ElasticTransform
- ``banding``      Posterize (2 bits a channel)
- ``seam``         Affine shift (a shifted copy with hard edges) or RandomGridShuffle (patch shuffle)

Defect types are balanced over the pairs (a shuffled cycle). A defect whose region differs too little from the
clean crop (MIN_VISIBLE, e.g. blur on flat sky) is drawn again (new parameters, after 3 draws a new box) up to
9 times, then the most visible draw is kept. The thresholds were set by looking at montages at 224 px. Everything is a
function of ``--seed``: the same arguments give byte-identical images and labels.csv.

Columns besides the canonical ones (image, prompt_id, system, label, defect, split): ``source`` (photo name),
``transform`` (albumentations class, ``none`` for clean rows) and ``region`` (``x0 y0 x1 y1`` of the defect
box, exclusive ends; the clean row of a pair carries the same box) and ``region_diff`` (the visibility: mean
|defect - clean| over the mask core, 0-255; 0 for clean rows). meta.json records the arguments and counts.

The default 224 px images are below the guard's default min_side (256): evaluate with e.g.
``python -m eval.compare --dataset DIR --min-side 224 ...`` (or build with ``--size 256``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from vlm_judge.embedded.synthetic.writer import prepare_output_folder

# albumentations asks PyPI for a newer version at import time unless told not to (no network here, and a
# data script should not phone home).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

GENERATOR = "scripts/make_photo_eval_set.py"
GENERATOR_VERSION = "1"
DEFECTS = ("noise_burst", "smear", "warp", "banding", "seam")
SYSTEM_CLEAN, SYSTEM_DEFECT = "photo-clean", "photo-defect"
REGION_FRACTION = (0.25, 0.45)  # defect box side / image side, as the synthetic logs' defect_area
CROP_FRACTION = (0.5, 0.95)  # crop side / photo short side
# Mean grey-level gradient of a usable crop at 224 px (scaled for other sizes): plain sky ~2, the median crop ~16.
MIN_CROP_DETAIL = 4.0
CROP_DRAWS = 20
PLACEMENT_CANDIDATES = 12  # random boxes tried; the one on the most (or least) detailed content is used
SMOOTH_PLACEMENT = ("noise_burst", "banding")  # placed on the smoothest candidate, the others on the busiest
MAX_TRIES = 9  # transform draws per defect before the most visible one is taken
TRIES_PER_BOX = 3  # draws in one box before another box is placed
# Mean |defect - clean| (0-255) over the mask core (mask >= 0.5) that counts as clearly visible, set by looking
# at montages of the weakest draws at 224 px: below these, 3-bit posterisation of busy texture, warps of fine
# texture and shifted copies of flat sky were hard to see.
MIN_VISIBLE = {"noise_burst": 14.0, "smear": 12.0, "warp": 20.0, "banding": 17.0, "seam": 18.0}


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        image = getattr(skimage.data, name)()
        return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


# name -> loader; all ship inside the scikit-image / scikit-learn wheels (checked with the network blocked).
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "camera": _skimage("camera"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "coins": _skimage("coins"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
}
# A photo's random stream depends on its place in PHOTOS, not on which photos were chosen.
PHOTO_IDS = {name: i for i, name in enumerate(PHOTOS)}


def load_photo(name: str) -> np.ndarray:
    """The photo as uint8 RGB (H, W, 3)."""
    image = np.asarray(PHOTOS[name]())
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def random_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of ``photo`` resized (Lanczos) to ``size`` x ``size``; a featureless crop (all sky,
    mean gradient below MIN_CROP_DETAIL) is drawn again, up to CROP_DRAWS times."""
    height, width = photo.shape[:2]
    short = min(height, width)
    low = max(int(CROP_FRACTION[0] * short), min(size, short))
    high = max(low, int(CROP_FRACTION[1] * short))
    for _ in range(CROP_DRAWS):
        side = int(rng.integers(low, high + 1))
        y0 = int(rng.integers(0, height - side + 1))
        x0 = int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[y0 : y0 + side, x0 : x0 + side])
        resized = np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))
        if _detail(resized).mean() >= MIN_CROP_DETAIL * 224 / size:
            break
    return resized


def _detail(image: np.ndarray) -> np.ndarray:
    """Per-pixel |horizontal| + |vertical| grey-level difference (0-510)."""
    gray = image.astype(np.float32).mean(axis=2)
    detail = np.zeros_like(gray)
    detail[:, 1:] += np.abs(np.diff(gray, axis=1))
    detail[1:, :] += np.abs(np.diff(gray, axis=0))
    return detail


def place_box(
    image: np.ndarray, rng: np.random.Generator, *, smooth: bool = False
) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of a square box of side REGION_FRACTION of the image side: of PLACEMENT_CANDIDATES
    random boxes, the one on the most detailed content (a smear, warp or seam needs edges to move), or with
    ``smooth`` the least detailed one (noise and posterisation hide in busy texture)."""
    size = image.shape[0]
    side = int(round(rng.uniform(*REGION_FRACTION) * size))
    detail = _detail(image)
    sign = -1.0 if smooth else 1.0
    best, best_score = (0, 0, side, side), -np.inf
    for _ in range(PLACEMENT_CANDIDATES):
        x0 = int(rng.integers(0, size - side + 1))
        y0 = int(rng.integers(0, size - side + 1))
        score = sign * float(detail[y0 : y0 + side, x0 : x0 + side].mean())
        if score > best_score:
            best, best_score = (x0, y0, x0 + side, y0 + side), score
    return best


def region_mask(
    size: int, box: tuple[int, int, int, int], rng: np.random.Generator, hard: bool
) -> np.ndarray:
    """Float mask (size, size) in [0, 1], zero outside ``box``.

    Soft: a rounded blob (superellipse, random aspect) filling the box with a feathered edge that reaches 0
    before the box border. Hard: the whole box (a rectangle with a sharp edge).
    """
    x0, y0, x1, y1 = box
    mask = np.zeros((size, size), np.float32)
    if hard:
        mask[y0:y1, x0:x1] = 1.0
        return mask
    side = x1 - x0
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    aspect = rng.uniform(0.75, 1.0)
    rx, ry = (side / 2, side / 2 * aspect) if rng.random() < 0.5 else (side / 2 * aspect, side / 2)
    power = rng.uniform(2.0, 4.0)  # 2 = ellipse, 4 = rounded square
    radius = (np.abs((xx - cx) / rx) ** power + np.abs((yy - cy) / ry) ** power) ** (1 / power)
    feather = max(0.12, 3.0 / side)  # edge width as a share of the radius, at least ~1.5 px
    mask[y0:y1, x0:x1] = np.clip((1.0 - radius) / feather, 0.0, 1.0)
    return mask


def make_transform(defect: str, size: int, rng: np.random.Generator):
    """An albumentations transform (applied with p=1) of ``defect`` with randomly drawn strength.

    Pixel-valued parameters scale with ``size`` so a defect looks the same at any output resolution."""
    import albumentations as A
    import cv2

    reflect = cv2.BORDER_REFLECT_101
    if defect == "noise_burst":
        if rng.random() < 0.5:
            return A.GaussNoise(std_range=(0.16, 0.28), per_channel=True, p=1.0)
        return A.ISONoise(color_shift=(0.15, 0.3), intensity=(0.9, 1.3), p=1.0)
    if defect == "smear":
        low = max(5, int(0.09 * size)) | 1  # odd kernel lengths, relative to the image side
        return A.MotionBlur(blur_limit=(low, max(low, int(0.16 * size)) | 1), allow_shifted=False, p=1.0)
    if defect == "warp":
        if rng.random() < 0.5:
            # distort_limit is a share of a grid cell: median displacement ~3-5 % of the side.
            steps = int(rng.integers(5, 8))
            return A.GridDistortion(num_steps=steps, distort_limit=(-0.45, 0.45), border_mode=reflect, p=1.0)
        # Measured (albumentations 2.0.8): median displacement ~0.078 * alpha / sigma px. Aim at 5-7 % of the side.
        sigma = 0.05 * size
        displacement = rng.uniform(0.05, 0.07) * size
        return A.ElasticTransform(alpha=displacement * sigma / 0.078, sigma=sigma, border_mode=reflect, p=1.0)
    if defect == "banding":
        # 2 bits (4 levels a channel): at 3 bits busy texture hid the bands (and never reached MIN_VISIBLE).
        return A.Posterize(num_bits=2, p=1.0)
    if defect == "seam":
        if rng.random() < 0.5:
            # A shifted copy: the box shows the photo moved by 10-22 % of the side, torn at the box edges.
            shift = int(rng.uniform(0.1, 0.22) * size) * int(rng.choice([-1, 1]))
            dx, dy = (shift, 0) if rng.random() < 0.5 else (0, shift)
            return A.Affine(translate_px={"x": (dx, dx), "y": (dy, dy)}, border_mode=reflect, p=1.0)
        cells = int(rng.integers(3, 6))  # patch shuffle: tiles of the photo in the wrong places
        return A.RandomGridShuffle(grid=(cells, cells), p=1.0)
    raise ValueError(f"unknown defect {defect!r}")


def apply_defect(
    clean: np.ndarray, defect: str, rng: np.random.Generator
) -> tuple[np.ndarray, str, tuple[int, int, int, int], float]:
    """(defective image, transform name, box, visibility): the transform applied to the whole crop, pasted
    back inside the box through the mask. While the region is not clearly visible (MIN_VISIBLE) the transform
    is drawn again, and every TRIES_PER_BOX draws the box too; after MAX_TRIES the most visible draw is kept.
    Visibility = mean |defect - clean| (0-255) over the mask core."""
    import albumentations as A

    size = clean.shape[0]
    best = None
    for attempt in range(MAX_TRIES):
        if attempt % TRIES_PER_BOX == 0:
            box = place_box(clean, rng, smooth=defect in SMOOTH_PLACEMENT)
            mask = region_mask(size, box, rng, hard=defect == "seam")
            alpha, core, outside = mask[..., None], mask >= 0.5, mask <= 0
        transform = make_transform(defect, size, rng)
        pipeline = A.Compose([transform], p=1.0, seed=int(rng.integers(0, 2**31 - 1)))
        transformed = pipeline(image=clean)["image"]
        out = np.rint(clean * (1.0 - alpha) + transformed.astype(np.float32) * alpha).astype(np.uint8)
        out[outside] = clean[outside]  # exact clean pixels wherever the mask is 0 (all outside the box)
        visible = float(np.abs(out.astype(np.int16) - clean.astype(np.int16))[core].mean())
        if best is None or visible > best[3]:
            best = (out, type(transform).__name__, box, visible)
        if visible >= MIN_VISIBLE[defect]:
            break
    assert best is not None
    return best


def build(
    output_dir: str | Path,
    *,
    size: int = 224,
    per_photo: int = 14,
    seed: int = 0,
    photos: list[str] | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Write the set into ``output_dir`` and return its label table."""
    if size < 32:
        raise ValueError("--size must be >= 32")
    if per_photo < 1:
        raise ValueError("--per_photo must be >= 1")
    names = list(photos or PHOTOS)
    unknown = sorted(set(names) - set(PHOTOS))
    if unknown:
        raise ValueError(f"unknown photo(s) {unknown}; known: {sorted(PHOTOS)}")
    out = Path(output_dir)
    prepare_output_folder(out, overwrite, generator=GENERATOR)
    (out / "images").mkdir(parents=True)

    # Balanced defect types: a cycle of shuffled rounds of all types, dealt to the pairs in random order.
    n_pairs = len(names) * per_photo
    plan_rng = np.random.default_rng([seed, 0])
    rounds = -(-n_pairs // len(DEFECTS))
    cycle = np.concatenate([plan_rng.permutation(len(DEFECTS)) for _ in range(rounds)])[:n_pairs]
    order = plan_rng.permutation(n_pairs)
    records = []
    for p, name in enumerate(names):
        photo = load_photo(name)
        for c in range(per_photo):
            defect = DEFECTS[int(cycle[order[p * per_photo + c]])]
            rng = np.random.default_rng([seed, 1, PHOTO_IDS[name], c])
            clean = random_crop(photo, size, rng)
            damaged, transform, box, visible = apply_defect(clean, defect, rng)
            prompt_id = f"{name}-{c:03d}"
            region = " ".join(str(v) for v in box)
            for system, image, label, kind, tname, diff in (
                (SYSTEM_CLEAN, clean, 0, "none", "none", 0.0),
                (SYSTEM_DEFECT, damaged, 1, defect, transform, round(visible, 1)),
            ):
                path = f"images/{prompt_id}_{system}.png"
                Image.fromarray(image).save(out / path, format="PNG", compress_level=6)
                records.append(
                    {
                        "image": path,
                        "prompt_id": prompt_id,
                        "system": system,
                        "label": label,
                        "defect": kind,
                        "split": "test",
                        "source": name,
                        "transform": tname,
                        "region": region,
                        "region_diff": diff,
                    }
                )
    table = pd.DataFrame.from_records(records)
    table.to_csv(out / "labels.csv", index=False, lineterminator="\n")
    _write_meta(out, table, size=size, per_photo=per_photo, seed=seed, photos=names)
    return table


def _write_meta(out: Path, table: pd.DataFrame, **args) -> None:
    import albumentations
    import skimage
    import sklearn

    defective = table[table["label"] == 1]
    meta = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "purpose": "evaluation only (real photographs, albumentations defects); never train on it",
        "args": args,
        "versions": {
            "albumentations": albumentations.__version__,
            "scikit-image": skimage.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "images": len(table),
        "pairs": len(defective),
        "defects": dict(sorted(Counter(defective["defect"]).items())),
        "transforms": dict(sorted(Counter(defective["transform"]).items())),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
