"""The defect registry: every defect type is one DefectType entry in ``_REGISTRY`` at the bottom of this file.

A DefectType is its name, the probability that one simulated assessor notices it (``detection``), an optional
``applies(scene)`` (None: every scene can show it) and ``apply(scene, size, jitter_rng, rng, side, strength)``,
which renders the defective image: ``jitter_rng`` is the system's jitter stream (pass it to render_scene
unchanged), ``rng`` the defect's own stream, ``side`` the region side as a fraction of the image side. Two kinds
are built in:

- image-space defects, ``image_defect(edit)``: the scene is rendered clean and ``edit(arr, box, rng, strength,
  scene)`` changes the pixels of ``box`` in place; the shared placement puts the region on scene content and
  tries again (up to MAX_PLACEMENTS) while it changes too little to see;
- render-time defects: ``apply`` picks its own region and renders with a render_scene hook (``grid_fault``,
  ``glyph_fault``) that breaks the grid elements / glyphs inside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image, ImageDraw

from .render import Box, inside, region_box, render_scene
from .scene import Colour, Scene

ImageEdit = Callable[[np.ndarray, Box, np.random.Generator, float, Scene], None]
Apply = Callable[[Scene, int, np.random.Generator, np.random.Generator, float, float], Image.Image]


@dataclass(frozen=True)
class DefectType:
    name: str
    detection: float  # probability that one assessor flags an image with this defect
    apply: Apply  # (scene, size, jitter_rng, rng, side, strength) -> the defective image
    applies: Callable[[Scene], bool] | None = None  # None: applies to every scene
    summary: str = ""


# ------------------------------------------------------------------------------------ image-space defects
def _blob_mask(h: int, w: int, rng: np.random.Generator, softness: float) -> np.ndarray:
    """An irregular blob filling the box, 1 inside, falling to 0 over ``softness`` of the radius."""
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    theta = np.arctan2(yy, xx)
    a, b = rng.uniform(0, 2 * math.pi, 2)
    wobble = 1 + 0.12 * np.sin(2 * theta + a) + 0.08 * np.sin(3 * theta + b)
    radius = np.sqrt(xx * xx + yy * yy) / (wobble * 0.95)
    return np.clip((1 - radius) / max(softness, 1e-3), 0, 1)[..., None]


def _smooth_field(h: int, w: int, rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize((w, h), Image.Resampling.BICUBIC))


def _smear(arr: np.ndarray, box: Box, rng: np.random.Generator, strength: float, scene: Scene) -> None:
    x0, y0, x1, y1 = box
    size = arr.shape[0]
    length = max(3.0, rng.uniform(0.05, 0.09) * size * strength)
    angle = rng.uniform(0, math.pi)
    pad = int(math.ceil(length / 2)) + 1
    sub = np.pad(arr[y0:y1, x0:x1].astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    h, w = y1 - y0, x1 - x0
    acc = np.zeros((h, w, 3), np.float32)
    taps = 13
    for i in range(taps):
        s = (i / (taps - 1) - 0.5) * length
        dx, dy = int(round(s * math.cos(angle))), int(round(s * math.sin(angle)))
        acc += sub[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
    mask = _blob_mask(h, w, rng, 0.35)
    region = arr[y0:y1, x0:x1].astype(np.float32)
    arr[y0:y1, x0:x1] = (region + (acc / taps - region) * mask).astype(np.uint8)


def _noise_burst(arr: np.ndarray, box: Box, rng: np.random.Generator, strength: float, scene: Scene) -> None:
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    sigma = 0.22 * 255 * strength
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * sigma
    mask = _blob_mask(h, w, rng, 0.3)
    region = arr[y0:y1, x0:x1].astype(np.float32)
    arr[y0:y1, x0:x1] = np.clip(region + noise * mask, 0, 255).astype(np.uint8)


def _banding(arr: np.ndarray, box: Box, rng: np.random.Generator, strength: float, scene: Scene) -> None:
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    step = float(np.clip(32 * strength, 4, 128))
    region = arr[y0:y1, x0:x1].astype(np.float32)
    # Quantising flat colour changes little, so the region first gets a smooth shading ramp (linear or radial,
    # like a generator's lighting); posterising it gives the hard contour bands of real banding.
    yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    if rng.uniform() < 0.5:
        angle = rng.uniform(0, 2 * math.pi)
        ramp = (math.cos(angle) * xx + math.sin(angle) * yy) / math.sqrt(2)
    else:
        ramp = 1 - 2 * np.sqrt(xx * xx + yy * yy) / math.sqrt(2)
    shaded = region + (ramp * 60 * strength)[..., None]
    banded = np.clip(np.floor(shaded / step) * step + step / 2, 0, 255)
    mask = _blob_mask(h, w, rng, 0.04)
    arr[y0:y1, x0:x1] = (region + (banded - region) * mask).astype(np.uint8)


def _warp(arr: np.ndarray, box: Box, rng: np.random.Generator, strength: float, scene: Scene) -> None:
    x0, y0, x1, y1 = box
    size = arr.shape[0]
    h, w = y1 - y0, x1 - x0
    amplitude = 0.05 * size * strength
    taper = (np.sin(np.linspace(0, math.pi, h, dtype=np.float32)) ** 2)[:, None] * (
        np.sin(np.linspace(0, math.pi, w, dtype=np.float32)) ** 2
    )[None, :]
    dx = _smooth_field(h, w, rng) * amplitude * 0.8
    dy = _smooth_field(h, w, rng) * amplitude * 0.8
    # Melting: the region sags downwards, more towards its bottom, with uneven drips across columns.
    sag = np.linspace(0, 1, h, dtype=np.float32)[:, None] ** 1.5
    drips = 0.6 + 0.8 * np.abs(_smooth_field(1, w, rng, cells=6))
    dy = dy + amplitude * 1.6 * sag * drips
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] - dy * taper
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] - dx * taper
    yi = np.clip(np.rint(ys), 0, size - 1).astype(np.intp)
    xi = np.clip(np.rint(xs), 0, size - 1).astype(np.intp)
    arr[y0:y1, x0:x1] = arr[yi, xi]


def _seam(arr: np.ndarray, box: Box, rng: np.random.Generator, strength: float, scene: Scene) -> None:
    x0, y0, x1, y1 = box
    size = arr.shape[0]
    s = x1 - x0
    if rng.uniform() < 0.5:
        # Duplicated patch: content from another part of the scene pasted with hard edges.
        far = [
            a
            for a in scene.anchors
            if math.hypot(a[0] * size - (x0 + s / 2), a[1] * size - (y0 + s / 2)) > 0.3 * size
        ]
        cx, cy = far[int(rng.integers(len(far)))] if far else (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))
        sx0, sy0, sx1, sy1 = region_box(cx, cy, s / size, size)
        patch = arr[sy0:sy1, sx0:sx1].copy()
        if rng.uniform() < 0.5:
            patch = patch[:, ::-1]
        arr[y0:y1, x0:x1] = patch
    else:
        # Tear: below a seam line the region is shifted sideways.
        cut = int(y0 + s * rng.uniform(0.35, 0.65))
        shift = int(max(2, rng.uniform(0.04, 0.08) * size * strength)) * int(rng.choice([-1, 1]))
        xs = np.clip(np.arange(x0, x1) - shift, 0, size - 1)
        arr[cut:y1, x0:x1] = arr[cut:y1][:, xs]
        arr[cut : cut + max(1, size // 256), x0:x1] = (
            arr[cut : cut + max(1, size // 256), x0:x1] * 0.6
        ).astype(np.uint8)


# A pixel-level defect must change at least this share of its region by more than VISIBLE_LEVELS (of 255);
# a smear or warp that lands on flat colour changes almost nothing, so it is placed again (MAX_PLACEMENTS).
VISIBLE_SHARE = 0.1
VISIBLE_LEVELS = 24
MAX_PLACEMENTS = 5


def _edit_placed(
    edit: ImageEdit, scene: Scene, arr: np.ndarray, rng: np.random.Generator, side: float, strength: float
) -> Image.Image:
    size = arr.shape[0]
    best: tuple[float, np.ndarray] | None = None
    for attempt in range(MAX_PLACEMENTS):
        # First tries on textured content, where a smear/warp/seam shows; then anywhere with content.
        anchors = scene.detail_anchors if attempt < 2 and scene.detail_anchors else scene.anchors
        ax, ay = anchors[int(rng.integers(len(anchors)))]
        x0, y0, x1, y1 = box = region_box(ax + rng.normal(0, 0.04), ay + rng.normal(0, 0.04), side, size)
        trial = arr.copy()
        edit(trial, box, rng, strength, scene)
        diff = np.abs(trial[y0:y1, x0:x1].astype(np.int16) - arr[y0:y1, x0:x1]).max(axis=2)
        share = float((diff > VISIBLE_LEVELS).mean())
        if best is None or share > best[0]:
            best = (share, trial)
        if share >= VISIBLE_SHARE:
            break
    return Image.fromarray(best[1])


@dataclass(frozen=True)
class ImageDefect:
    """The ``apply`` of an image-space defect: render clean, then ``edit`` a region placed on scene content.

    ``clean``: the clean render of the same scene and jitter (what ``render_scene(scene, size, jitter_rng)``
    returns), reused instead of rendering it again; the result is the same image."""

    edit: ImageEdit

    def __call__(
        self,
        scene: Scene,
        size: int,
        jitter_rng: np.random.Generator,
        rng: np.random.Generator,
        side: float,
        strength: float,
        clean: Image.Image | None = None,
    ) -> Image.Image:
        arr = np.array(clean if clean is not None else render_scene(scene, size, jitter_rng))
        return _edit_placed(self.edit, scene, arr, rng, side, strength)


def image_defect(edit: ImageEdit) -> Apply:
    """The ``apply`` of an image-space defect made of ``edit`` (ImageDefect)."""
    return ImageDefect(edit)


# ------------------------------------------------------------------------------------- render-time defects
def _span(low: float, high: float, margin: float) -> tuple[float, float]:
    # Centres that keep a region of half-side ~margin over [low, high]; a region wider than that is centred.
    if low + margin > high - margin:
        middle = (low + high) / 2
        return middle, middle
    return low + margin, high - margin


def _break_element(box: Box, rng: np.random.Generator, strength: float, ex, ey, hw, hh, cw, ch):
    """grid_fault: elements centred in ``box`` go missing, shift off the lattice or change size."""
    if not inside(box, ex, ey):
        return ex, ey, hw, hh
    fault = rng.uniform()
    if fault < 0.3 * strength:
        return None  # missing element
    if fault < 0.7 * strength:  # misaligned
        ex += rng.choice([-1, 1]) * rng.uniform(0.25, 0.5) * cw
        ey += rng.choice([-1, 1]) * rng.uniform(0.2, 0.45) * ch
    elif fault < 0.9 * strength:  # wrong size / merged blob
        k = rng.uniform(1.5, 2.2) if rng.uniform() < 0.5 else rng.uniform(0.3, 0.5)
        hw, hh = hw * k, hh * k * rng.uniform(0.7, 1.3)
    return ex, ey, hw, hh


def _garble_glyph(
    box: Box, g: np.random.Generator, draw: ImageDraw.ImageDraw, gx, gy, gw, gh, colour: Colour, width: int
) -> bool:
    """glyph_fault: glyphs centred in ``box`` become malformed strokes (off-grid ends, broken baseline,
    wrong sizes, overlaps)."""
    if not inside(box, gx + gw / 2, gy + gh / 2):
        return False
    k = g.uniform(0.6, 1.6)
    oy = g.normal(0, 0.35) * gh
    for _ in range(int(g.integers(2, 6))):
        ax, ay, bx, by = g.uniform(-0.3, 1.3, 4)
        draw.line(
            (gx + ax * gw * k, gy + oy + ay * gh * k, gx + bx * gw * k, gy + oy + by * gh * k),
            fill=colour,
            width=max(1, int(width * g.uniform(0.5, 2.2))),
        )
    return True


def _broken_grid(scene, size, jitter_rng, rng, side, strength) -> Image.Image:
    g = scene.grid
    cx, cy = rng.uniform(*_span(g.x0, g.x1, side / 3)), rng.uniform(*_span(g.y0, g.y1, side / 3))
    box = region_box(cx, cy, side, size)
    fault = partial(_break_element, box, rng, min(strength, 1.0 / 0.9))
    return render_scene(scene, size, jitter_rng, grid_fault=fault)


def _garbled_text(scene, size, jitter_rng, rng, side, strength) -> Image.Image:
    t = scene.text
    box = region_box(t.x + rng.uniform(0.15, 0.3), t.y + len(t.rows) * t.glyph_h * 0.8, side, size)
    return render_scene(scene, size, jitter_rng, glyph_fault=partial(_garble_glyph, box, rng))


# ---------------------------------------------------------------------------------------------- registry
_REGISTRY = (
    DefectType(
        "smear", 0.85, image_defect(_smear), summary="directional motion blur of a blob-shaped region"
    ),
    DefectType(
        "seam",
        0.8,
        image_defect(_seam),
        summary="a patch cloned from elsewhere in the image, or a region torn and shifted along a seam line",
    ),
    DefectType(
        "warp",
        0.9,
        image_defect(_warp),
        summary="a melted region: smooth random displacement plus downward sag and drips",
    ),
    DefectType(
        "noise_burst", 0.95, image_defect(_noise_burst), summary="strong per-pixel colour noise in a blob"
    ),
    DefectType(
        "banding",
        0.85,
        image_defect(_banding),
        summary="posterised region (few colour levels, hard band edges)",
    ),
    DefectType(
        "broken_grid",
        0.85,
        _broken_grid,
        applies=lambda scene: scene.grid is not None,
        summary="the repeated structure with missing, misaligned and mis-sized elements",
    ),
    DefectType(
        "garbled_text",
        0.9,
        _garbled_text,
        applies=lambda scene: scene.text is not None,
        summary="glyph rows replaced by malformed strokes with broken baseline and sizes",
    ),
)
# Everything looks defect types up here at call time; DEFECT_TYPES and DETECTION are views taken at import.
DEFECTS: dict[str, DefectType] = {d.name: d for d in _REGISTRY}
DEFECT_TYPES = tuple(DEFECTS)
# Probability that one assessor notices the defect (salience); clean images get SyntheticConfig.false_alarm.
DETECTION = {d.name: d.detection for d in _REGISTRY}


def applicable_defects(scene: Scene, allowed: Sequence[str] = DEFECT_TYPES) -> list[str]:
    """The defects of ``allowed`` that ``scene`` can show: those without ``applies`` in the order of
    ``allowed``, then the scene-dependent ones in registry order (the order the generator draws from)."""
    unconditional = [d for d in allowed if d not in DEFECTS or DEFECTS[d].applies is None]
    conditional = [
        d.name for d in DEFECTS.values() if d.applies is not None and d.name in allowed and d.applies(scene)
    ]
    return unconditional + conditional


def render_generation(
    scene: Scene,
    size: int,
    jitter_rng: np.random.Generator,
    defect: str | None = None,
    defect_rng: np.random.Generator | None = None,
    *,
    area: tuple[float, float] = (0.25, 0.45),
    strength: float = 1.0,
    clean: Image.Image | None = None,
) -> Image.Image:
    """Render one system's image of ``scene`` at ``size`` x ``size``, with ``defect`` (a DEFECT_TYPES name) or none.

    ``clean``: this system's clean render of ``scene`` (the ``defect=None`` image for the same jitter), which an
    image-space defect edits instead of rendering the scene again (the training stream's twins); render-time
    defects ignore it. ValueError for an unknown defect or one that ``scene`` cannot show (broken_grid without a
    grid, ...).
    """
    if defect is None or defect == "none":
        return render_scene(scene, size, jitter_rng)
    if defect not in DEFECTS:
        raise ValueError(f"unknown defect {defect!r}; known: {tuple(DEFECTS)}")
    kind = DEFECTS[defect]
    if kind.applies is not None and not kind.applies(scene):
        raise ValueError(f"defect {defect!r} does not apply to this scene")
    rng = defect_rng if defect_rng is not None else np.random.default_rng()
    if clean is not None and clean.size != (size, size):
        raise ValueError(f"clean must be this scene's {size}x{size} clean render, got a {clean.size} image")
    side = rng.uniform(*area)
    if clean is not None and isinstance(kind.apply, ImageDefect):
        return kind.apply(scene, size, jitter_rng, rng, side, strength, clean=clean)
    return kind.apply(scene, size, jitter_rng, rng, side, strength)
