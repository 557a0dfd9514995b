"""Generic local image corruptions (noise, blur, posterisation, JPEG blocks, displacement, pixelation, motion
blur, elastic fields, copy-move, streaks, quantised ramps, row tears) for the tiny base model's label-free vision
pretraining.

This is deliberately a different code path from the synthetic defect renderer (vlm_judge.embedded.synthetic): plain
PIL filters on a masked region of a clean picture, no scene knowledge, no assessor labels. It gives the tiny
vision tower the low-level vision a real pretrained encoder brings (what noise, blur or compression looks like),
with a dense per-token target: which corruption covers each visual token.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

Corrupt = Callable[[Image.Image, np.random.Generator], Image.Image]


def _noise(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    sigma = rng.uniform(10, 60)
    shape = arr.shape if rng.uniform() < 0.7 else arr.shape[:2] + (1,)
    return Image.fromarray(np.clip(arr + rng.normal(0, sigma, shape), 0, 255).astype(np.uint8))


def _blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(1.2, 3.5)))


def _posterize(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.posterize(img, int(rng.integers(1, 4)))


def _jpeg(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=int(rng.integers(2, 10)))
    return Image.open(buffer).convert("RGB")


def _pixelate(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    block = int(rng.integers(4, 9))
    w, h = img.size
    return img.resize((max(1, w // block), max(1, h // block)), Image.Resampling.NEAREST).resize(
        (w, h), Image.Resampling.NEAREST
    )


def _displace(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img)
    dy, dx = (int(v) for v in rng.integers(6, 24, 2) * rng.choice([-1, 1], 2))
    return Image.fromarray(np.roll(arr, (dy, dx), axis=(0, 1)))


def _shifted(arr: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``arr`` moved by (dy, dx) pixels, edges repeated (no wrap-around)."""
    h, w = arr.shape[:2]
    ys = np.clip(np.arange(h) - int(round(dy)), 0, h - 1)
    xs = np.clip(np.arange(w) - int(round(dx)), 0, w - 1)
    return arr[ys][:, xs]


def _motion_blur(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    length, angle = rng.uniform(5, 14), rng.uniform(0, np.pi)
    offsets = np.linspace(-length / 2, length / 2, 9)
    acc = sum(_shifted(arr, t * np.sin(angle), t * np.cos(angle)) for t in offsets)
    return Image.fromarray((acc / len(offsets)).astype(np.uint8))


def _elastic(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    amplitude = rng.uniform(3, 9)

    def field() -> np.ndarray:
        coarse = rng.standard_normal((5, 5)).astype(np.float32)
        return np.asarray(Image.fromarray(coarse, "F").resize((w, h), Image.Resampling.BICUBIC)) * amplitude

    ys = np.clip(np.rint(np.arange(h)[:, None] + field()), 0, h - 1).astype(np.intp)
    xs = np.clip(np.rint(np.arange(w)[None, :] + field()), 0, w - 1).astype(np.intp)
    return Image.fromarray(arr[ys, xs])


def _clone(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Copy-move: the region shows content from a far part of the picture (wrapped around), maybe mirrored."""
    arr = np.asarray(img)
    h, w = arr.shape[:2]
    dy, dx = (int(rng.uniform(0.25, 0.75) * n) for n in (h, w))
    moved = np.roll(arr, (dy, dx), axis=(0, 1))
    return Image.fromarray(np.ascontiguousarray(moved[:, ::-1] if rng.uniform() < 0.5 else moved))


def _streak(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A long directional smudge (a finger drawn across wet paint); corrupt_regions feathers its edges."""
    arr = np.asarray(img, dtype=np.float32)
    length, angle = rng.uniform(12, 28), rng.uniform(0, np.pi)
    offsets = np.linspace(0, length, 11)  # one-sided: content is dragged, not only averaged
    weights = np.exp(-offsets / length)
    acc = sum(w * _shifted(arr, t * np.sin(angle), t * np.cos(angle)) for w, t in zip(weights, offsets, strict=True))
    return Image.fromarray((acc / weights.sum()).astype(np.uint8))


def _ramp_bands(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A smooth shading gradient over the picture, quantised into flat contour bands."""
    arr = np.asarray(img, dtype=np.float32)
    h, w = arr.shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    if rng.uniform() < 0.5:
        ramp = np.hypot(gy - cy, gx - cx) / max(h, w)
    else:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * gx + np.sin(angle) * gy) / max(h, w)
    shaded = arr + ((ramp - ramp.mean()) * rng.uniform(40, 110))[..., None]  # zero mean: no brighter box
    levels = rng.uniform(14, 40)
    return Image.fromarray(np.clip(np.floor(shaded / levels) * levels + levels / 2, 0, 255).astype(np.uint8))


def _row_tear(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Horizontal strips shifted sideways against their neighbours, a dark line at each tear."""
    arr = np.asarray(img).copy()
    h = arr.shape[0]
    strip, shift = int(rng.integers(6, 22)), int(rng.integers(3, 14)) * int(rng.choice([-1, 1]))
    for y0 in range(int(rng.integers(0, strip)), h, 2 * strip):
        arr[y0 : y0 + strip] = np.roll(arr[y0 : y0 + strip], shift, axis=1)
        arr[y0] = (arr[y0] * 0.6).astype(np.uint8)
    return Image.fromarray(arr)


CORRUPTIONS: dict[str, Corrupt] = {
    "noise": _noise,
    "blur": _blur,
    "posterize": _posterize,
    "jpeg": _jpeg,
    "pixelate": _pixelate,
    "displace": _displace,
    "motion_blur": _motion_blur,
    "elastic": _elastic,
    "clone": _clone,
    "streak": _streak,
    "ramp_bands": _ramp_bands,
    "row_tear": _row_tear,
}
# Kinds whose region blends in over a soft border (a smudge has no hard edge); the others are pasted hard.
FEATHERED = frozenset({"streak"})
# The committed tiny base's first stage was trained on these six; the later kinds extend it.
FIRST_KINDS = ("noise", "blur", "posterize", "jpeg", "pixelate", "displace")
CLASSES = ("clean", *FIRST_KINDS)


def check_kinds(kinds: tuple[str, ...]) -> None:
    """Raise ValueError naming the kinds unless ``kinds`` is a non-empty subset of CORRUPTIONS."""
    if not kinds or set(kinds) - set(CORRUPTIONS):
        raise ValueError(f"corruption kinds must be a non-empty subset of {tuple(CORRUPTIONS)}, got {kinds}")


def corrupt_regions(
    img: Image.Image,
    rng: np.random.Generator,
    *,
    kinds: tuple[str, ...] = FIRST_KINDS,
    min_regions: int = 0,
    max_regions: int = 2,
    side: tuple[float, float] = (0.15, 0.5),
) -> tuple[Image.Image, np.ndarray]:
    """Corrupt min_regions..max_regions random rectangles/ellipses of ``img`` with corruptions drawn from
    ``kinds``; returns the image and a per-pixel class map (0 = clean, i = kinds[i - 1])."""
    check_kinds(kinds)
    w, h = img.size
    out = img.copy()
    classes = np.zeros((h, w), np.int64)
    for _ in range(int(rng.integers(min_regions, max_regions + 1))):
        kind = int(rng.integers(len(kinds)))
        sw, sh = (int(s * w) for s in rng.uniform(*side, 2))
        x0, y0 = int(rng.integers(0, w - sw + 1)), int(rng.integers(0, h - sh + 1))
        mask = Image.new("L", (w, h), 0)
        shape = ImageDraw.Draw(mask).ellipse if rng.uniform() < 0.5 else ImageDraw.Draw(mask).rectangle
        shape((x0, y0, x0 + sw, y0 + sh), fill=255)
        blend = mask
        if kinds[kind] in FEATHERED:  # soft inside the shape, still nothing outside it
            radius = 0.2 * min(sw, sh)
            soft = mask.filter(ImageFilter.GaussianBlur(radius)).point(lambda v: max(0, 2 * v - 255))
            blend = ImageChops.multiply(soft, mask)
        out = Image.composite(CORRUPTIONS[kinds[kind]](out, rng), out, blend)
        classes[np.asarray(mask) > 127] = kind + 1
    return out, classes
