"""Synthetic assessor logs: procedurally rendered "generations" by K systems with generation-like defects.

This is the embedded default dataset (numpy + PIL only, no downloads). For every prompt a scene spec is drawn
(gradient background, textured panels, solid objects, a grid of windows/dots, rows of text-like glyphs); each
of K systems renders its own jittered variant of the scene. System k has its own defect rate (spread linearly
from ``defect_rates[0]`` to ``defect_rates[1]``); exactly ``round(rate * num_prompts)`` of its images get one
defect, so realised per-system rates differ as designed and side-by-side comparisons between systems are
meaningful. Defects (DEFECT_TYPES):

- ``smear``         directional motion blur of a blob-shaped region
- ``seam``          a patch cloned from elsewhere in the image, or a region torn and shifted along a seam line
- ``warp``          a melted region: smooth random displacement plus downward sag and drips
- ``noise_burst``   strong per-pixel colour noise in a blob
- ``banding``       posterised region (few colour levels, hard band edges)
- ``broken_grid``   the repeated structure with missing, misaligned and mis-sized elements
- ``garbled_text``  glyph rows replaced by malformed strokes with broken baseline and sizes

Every size is relative to ``image_size`` and each image is rendered directly at that size (no resize of the
image anywhere: a resize averages small defects away). The defect region is a square whose side is a fraction
``defect_area`` (default 25-45 %) of the image side, centred on scene content, so the defect stays visible at
any rendered size; ``defect_strength`` scales intensities. Nothing system-specific is rendered besides the
defect rate (no per-system style), so a judge cannot tell the system, and with it the defect rate, by style.

Assessors: each of ``votes`` assessors flags a defective image with a per-type detection probability
(DETECTION) and a clean one with probability ``false_alarm``; ``label`` is the majority vote
(``defect_votes / total_votes >= 0.5``, the loader's rule). Output is the canonical format (see format.py) with
``split`` assigned by split_by_prompt, plus ``meta.json`` and ``README.md``. Everything is a function of the
seed: the same arguments give the same images and a byte-identical labels.csv.
"""

from __future__ import annotations

import colorsys
import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from .splits import split_by_prompt

GENERATOR = "vlm_judge.data.synthetic"
GENERATOR_VERSION = "1"

DEFECT_TYPES = ("smear", "seam", "warp", "noise_burst", "banding", "broken_grid", "garbled_text")
# Probability that one assessor notices the defect (salience); clean images get SyntheticConfig.false_alarm.
DETECTION = {
    "smear": 0.85,
    "seam": 0.8,
    "warp": 0.9,
    "noise_burst": 0.95,
    "banding": 0.85,
    "broken_grid": 0.85,
    "garbled_text": 0.9,
}


@dataclass
class SyntheticConfig:
    num_prompts: int = 64
    num_systems: int = 4
    seed: int = 0
    image_size: int = 1024
    votes: int = 5  # assessors per image
    defect_rates: tuple[float, float] = (0.15, 0.7)  # first and last system; the others evenly in between
    defect_area: tuple[float, float] = (0.25, 0.45)  # defect region side as a fraction of the image side
    defect_strength: float = 1.0
    defect_types: tuple[str, ...] = DEFECT_TYPES
    false_alarm: float = 0.08
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)

    def __post_init__(self) -> None:
        self.defect_rates = tuple(float(r) for r in self.defect_rates)
        self.defect_area = tuple(float(a) for a in self.defect_area)
        self.defect_types = tuple(self.defect_types)
        self.split_fractions = tuple(float(f) for f in self.split_fractions)
        if self.num_prompts < 1 or self.num_systems < 1 or self.votes < 1:
            raise ValueError("num_prompts, num_systems and votes must be >= 1")
        if self.image_size < 64:
            raise ValueError(f"image_size must be >= 64, got {self.image_size}")
        if not all(0 <= r <= 1 for r in self.defect_rates) or len(self.defect_rates) != 2:
            raise ValueError(f"defect_rates must be two numbers in [0, 1], got {self.defect_rates}")
        if len(self.defect_area) != 2 or not 0.05 <= self.defect_area[0] <= self.defect_area[1] <= 0.9:
            raise ValueError(
                f"defect_area must be (low, high) with 0.05 <= low <= high <= 0.9, got {self.defect_area}"
            )
        unknown = set(self.defect_types) - set(DEFECT_TYPES)
        if unknown or not self.defect_types:
            raise ValueError(
                f"defect_types must be a non-empty subset of {DEFECT_TYPES}, got {self.defect_types}"
            )

    def system_names(self) -> list[str]:
        return [f"gen-v{k + 1}" for k in range(self.num_systems)]

    def system_rates(self) -> list[float]:
        low, high = self.defect_rates
        if self.num_systems == 1:
            return [low]
        return [low + (high - low) * k / (self.num_systems - 1) for k in range(self.num_systems)]


# ----------------------------------------------------------------------------------------------- scene spec
Colour = tuple[int, int, int]


@dataclass
class Shape:
    kind: str  # circle | ellipse | rect | polygon | star
    cx: float  # centre and size are fractions of the image side
    cy: float
    w: float
    h: float
    angle: float
    colour: Colour
    outline: Colour | None
    sides: int = 0
    fill: str = "solid"  # solid | stripes | checker | noise
    colour2: Colour = (0, 0, 0)
    period: float = 0.04  # texture period (fraction of side)
    tex_angle: float = 0.0
    tex_seed: int = 0


@dataclass
class TextBlock:
    x: float
    y: float
    glyph_h: float
    rows: list[list[int]]  # glyph ids, -1 = space
    colour: Colour
    plate: Colour


@dataclass
class Grid:
    x0: float
    y0: float
    x1: float
    y1: float
    rows: int
    cols: int
    element: str  # dot | window | square
    colour: Colour
    plate: Colour
    fill: float  # element size as a fraction of the cell


@dataclass
class Scene:
    bg: str  # linear | radial
    bg_colours: tuple[Colour, Colour]
    bg_angle: float
    bg_centre: tuple[float, float]
    panels: list[Shape]
    objects: list[Shape]
    grid: Grid | None
    text: TextBlock | None
    prompt: str = ""
    anchors: list[tuple[float, float]] = field(default_factory=list)  # content centres for defect placement
    detail_anchors: list[tuple[float, float]] = field(
        default_factory=list
    )  # textured content (panels, grid, text)


def _colour(rng: np.random.Generator, sat: tuple[float, float] = (0.35, 0.9), val=(0.3, 0.95)) -> Colour:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*sat), rng.uniform(*val))
    return (int(r * 255), int(g * 255), int(b * 255))


def colour_name(colour: Colour) -> str:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in colour))
    if v < 0.2:
        return "black"
    if s < 0.18:
        return "white" if v > 0.85 else "grey"
    hue = h * 360
    names = [(15, "red"), (40, "orange"), (65, "yellow"), (160, "green"), (190, "teal"), (250, "blue")]
    names += [(290, "purple"), (345, "pink"), (361, "red")]
    name = next(n for limit, n in names if hue < limit)
    if v < 0.45:
        return "dark " + name
    if s < 0.45:
        return "pale " + name
    return name


def _shape(rng: np.random.Generator, kind: str, size: tuple[float, float], textured: bool) -> Shape:
    w = rng.uniform(*size)
    h = w * rng.uniform(0.6, 1.4) if kind in ("ellipse", "rect") else w
    shape = Shape(
        kind=kind,
        cx=rng.uniform(0.12, 0.88),
        cy=rng.uniform(0.12, 0.88),
        w=w,
        h=h,
        angle=rng.uniform(0, math.pi),
        colour=_colour(rng),
        outline=_colour(rng, val=(0.1, 0.4)) if rng.uniform() < 0.5 else None,
        sides=int(rng.integers(3, 9)),
    )
    if textured:
        shape.fill = str(rng.choice(["stripes", "checker", "noise"]))
        shape.colour2 = _colour(rng)
        shape.period = rng.uniform(0.02, 0.06)
        shape.tex_angle = rng.uniform(0, math.pi)
        shape.tex_seed = int(rng.integers(2**31))
    return shape


def make_scene(rng: np.random.Generator) -> Scene:
    """A random scene spec (all geometry relative to the image side) and its prompt text."""
    bg = "radial" if rng.uniform() < 0.3 else "linear"
    c0, c1 = _colour(rng, sat=(0.2, 0.8), val=(0.15, 0.5)), _colour(rng, sat=(0.2, 0.8), val=(0.6, 1.0))
    panels = [
        _shape(rng, str(rng.choice(["rect", "ellipse", "polygon"])), (0.25, 0.45), textured=True)
        for _ in range(int(rng.integers(1, 3)))
    ]
    kinds = ["circle", "ellipse", "rect", "polygon", "star"]
    objects = [
        _shape(rng, str(rng.choice(kinds)), (0.06, 0.2), textured=False) for _ in range(rng.integers(3, 8))
    ]
    grid = None
    if rng.uniform() < 0.75:
        gw, gh = rng.uniform(0.35, 0.55), rng.uniform(0.3, 0.5)
        x0, y0 = rng.uniform(0.03, 0.97 - gw), rng.uniform(0.03, 0.97 - gh)
        grid = Grid(
            x0=x0,
            y0=y0,
            x1=x0 + gw,
            y1=y0 + gh,
            rows=int(rng.integers(4, 9)),
            cols=int(rng.integers(4, 10)),
            element=str(rng.choice(["dot", "window", "square"])),
            colour=_colour(rng, val=(0.7, 1.0)),
            plate=_colour(rng, sat=(0.1, 0.5), val=(0.15, 0.45)),
            fill=rng.uniform(0.45, 0.7),
        )
    text = None
    if rng.uniform() < 0.75:
        glyph_h = rng.uniform(0.03, 0.05)
        n_rows = int(rng.integers(2, 5))
        max_slots = int(0.55 / (glyph_h * 0.85))
        rows = []
        for _ in range(n_rows):
            row: list[int] = []
            target = int(rng.integers(max_slots // 2, max_slots + 1))
            while len(row) < target:
                row += [int(g) for g in rng.integers(0, len(GLYPHS), rng.integers(2, 8))] + [-1]
            rows.append(row[:target])
        width = max_slots * glyph_h * 0.85
        height = n_rows * glyph_h * 1.6
        text = TextBlock(
            x=rng.uniform(0.04, 0.96 - width),
            y=rng.uniform(0.04, 0.96 - height),
            glyph_h=glyph_h,
            rows=rows,
            colour=_colour(rng, val=(0.05, 0.3)),
            plate=_colour(rng, sat=(0.0, 0.25), val=(0.85, 1.0)),
        )
    scene = Scene(
        bg,
        (c0, c1),
        rng.uniform(0, 2 * math.pi),
        (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)),
        panels,
        objects,
        grid,
        text,
    )
    scene.prompt = describe_scene(scene)
    scene.detail_anchors = [(s.cx, s.cy) for s in panels]
    if grid:
        scene.detail_anchors.append(((grid.x0 + grid.x1) / 2, (grid.y0 + grid.y1) / 2))
    if text:
        scene.detail_anchors.append((text.x + 0.2, text.y + len(text.rows) * text.glyph_h * 0.8))
    scene.anchors = scene.detail_anchors + [(s.cx, s.cy) for s in objects]
    return scene


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def describe_scene(scene: Scene) -> str:
    c0, c1 = (colour_name(c) for c in scene.bg_colours)
    parts = [f"a {scene.bg} gradient background from {c0} to {c1}"]
    texture = {"stripes": "striped", "checker": "checkered", "noise": "mottled"}
    noun = {
        "rect": "rectangle",
        "ellipse": "ellipse",
        "polygon": "polygon",
        "circle": "circle",
        "star": "star",
    }
    for p in scene.panels:
        parts.append(
            f"a large {texture[p.fill]} {colour_name(p.colour)} and {colour_name(p.colour2)} {noun[p.kind]}"
        )
    for o in scene.objects:
        kind = f"{o.sides}-sided polygon" if o.kind == "polygon" else noun[o.kind]
        parts.append(_a(f"{colour_name(o.colour)} {kind}"))
    if scene.grid:
        g = scene.grid
        parts.append(
            f"a {g.rows}x{g.cols} grid of {colour_name(g.colour)} {g.element}s on a {colour_name(g.plate)} plate"
        )
    if scene.text:
        parts.append(f"a sign with {len(scene.text.rows)} lines of {colour_name(scene.text.colour)} text")
    return ", ".join(parts)


def _make_glyphs() -> list[list[tuple[int, int]]]:
    # A fixed alphabet of stroke glyphs on a 3x3 node grid (like a segment display), the same for every seed.
    segments = [
        (0, 1),
        (1, 2),
        (3, 4),
        (4, 5),
        (6, 7),
        (7, 8),
        (0, 3),
        (3, 6),
        (1, 4),
        (4, 7),
        (2, 5),
        (5, 8),
    ]
    segments += [(0, 4), (2, 4), (4, 6), (4, 8), (0, 2), (6, 8), (0, 6), (2, 8)]
    rng = np.random.default_rng(20241122)
    glyphs = []
    while len(glyphs) < 32:
        chosen = sorted(
            int(i) for i in rng.choice(len(segments), size=int(rng.integers(2, 5)), replace=False)
        )
        glyph = [segments[i] for i in chosen]
        if glyph not in glyphs:
            glyphs.append(glyph)
    return glyphs


GLYPHS = _make_glyphs()
_NODES = [(x / 2, y / 2) for y in range(3) for x in range(3)]


# ---------------------------------------------------------------------------------------------- rendering
def _jitter_colour(rng: np.random.Generator, c: Colour, amount: int = 10) -> Colour:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in c)  # type: ignore[return-value]


def _background(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    axis = np.arange(size, dtype=np.float32) / size
    if scene.bg == "linear":
        angle = scene.bg_angle + rng.normal(0, 0.08)
        t = math.cos(angle) * axis[None, :] + math.sin(angle) * axis[:, None]
    else:
        cx, cy = (c + rng.normal(0, 0.02) for c in scene.bg_centre)
        t = np.sqrt((axis[None, :] - cx) ** 2 + (axis[:, None] - cy) ** 2)
    t -= t.min()
    t *= 255.0 / max(float(t.max()), 1e-6)
    # A 256-entry colour table and one gather: much faster than blending three float channels.
    c0, c1 = (np.array(_jitter_colour(rng, c), dtype=np.float32) for c in scene.bg_colours)
    table = (c0[None, :] + np.linspace(0, 1, 256, dtype=np.float32)[:, None] * (c1 - c0)[None, :]).astype(
        np.uint8
    )
    return table[t.astype(np.uint8)]


def _texture(shape: Shape, w: int, h: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(shape.tex_seed)
    c0, c1 = np.array(shape.colour, np.float32), np.array(shape.colour2, np.float32)
    period = max(shape.period * size, 4.0)
    if shape.fill == "noise":
        # Smooth value noise: a coarse random grid interpolated up (a texture, not a resize of the image).
        coarse = rng.uniform(0, 1, (max(2, int(h / period)), max(2, int(w / period)))).astype(np.float32)
        t = np.asarray(Image.fromarray(coarse, "F").resize((w, h), Image.Resampling.BICUBIC))
        t = np.clip(t, 0, 1)
    else:
        xs = np.arange(w, dtype=np.float32)[None, :]
        ys = np.arange(h, dtype=np.float32)[:, None]
        if shape.fill == "stripes":
            u = xs * math.cos(shape.tex_angle) + ys * math.sin(shape.tex_angle)
            t = ((u // (period / 2)) % 2).astype(np.float32)
        else:
            cell = period / 2
            t = (((xs // cell) + (ys // cell)) % 2).astype(np.float32)
    table = (c0[None, :] + np.linspace(0, 1, 256, dtype=np.float32)[:, None] * (c1 - c0)[None, :]).astype(
        np.uint8
    )
    return table[(t * 255).astype(np.uint8)]


def _polygon_points(shape: Shape, size: int) -> list[tuple[float, float]]:
    cx, cy, rx, ry = shape.cx * size, shape.cy * size, shape.w * size / 2, shape.h * size / 2
    if shape.kind == "rect":
        corners = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
    elif shape.kind == "star":
        n = max(shape.sides, 5)
        corners = [
            (
                (1.0 if i % 2 == 0 else 0.45) * math.cos(math.pi * i / n),
                (1.0 if i % 2 == 0 else 0.45) * math.sin(math.pi * i / n),
            )
            for i in range(2 * n)
        ]
    else:
        corners = [
            (math.cos(2 * math.pi * i / shape.sides), math.sin(2 * math.pi * i / shape.sides))
            for i in range(shape.sides)
        ]
    ca, sa = math.cos(shape.angle), math.sin(shape.angle)
    return [(cx + rx * x * ca - ry * y * sa, cy + rx * x * sa + ry * y * ca) for x, y in corners]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, size: int, fill, outline, width: int) -> None:
    if shape.kind in ("circle", "ellipse"):
        rx, ry = shape.w * size / 2, shape.h * size / 2
        box = (shape.cx * size - rx, shape.cy * size - ry, shape.cx * size + rx, shape.cy * size + ry)
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    else:
        draw.polygon(_polygon_points(shape, size), fill=fill, outline=outline, width=width)


def _jittered(shape: Shape, rng: np.random.Generator) -> Shape:
    scale = 1 + rng.normal(0, 0.04)
    return Shape(
        **{
            **asdict(shape),
            "cx": shape.cx + rng.normal(0, 0.012),
            "cy": shape.cy + rng.normal(0, 0.012),
            "w": shape.w * scale,
            "h": shape.h * scale,
            "angle": shape.angle + rng.normal(0, 0.05),
            "colour": _jitter_colour(rng, shape.colour),
        }
    )


def _paste_panel(canvas: Image.Image, shape: Shape, size: int) -> None:
    rx, ry = shape.w * size / 2, shape.h * size / 2
    r = math.hypot(rx, ry) if shape.kind != "ellipse" else max(rx, ry)
    x0, y0 = int(max(0, shape.cx * size - r)), int(max(0, shape.cy * size - r))
    x1, y1 = int(min(size, shape.cx * size + r)), int(min(size, shape.cy * size + r))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    mask = Image.new("L", (size, size), 0)
    _draw_shape(ImageDraw.Draw(mask), shape, size, fill=255, outline=None, width=0)
    texture = Image.fromarray(_texture(shape, x1 - x0, y1 - y0, size))
    canvas.paste(texture, (x0, y0), mask.crop((x0, y0, x1, y1)))
    if shape.outline:
        _draw_shape(ImageDraw.Draw(canvas), shape, size, None, shape.outline, max(1, size // 256))


def _region_box(cx: float, cy: float, side: float, size: int) -> tuple[int, int, int, int]:
    s = int(round(side * size))
    x0 = int(np.clip(round(cx * size - s / 2), 0, size - s))
    y0 = int(np.clip(round(cy * size - s / 2), 0, size - s))
    return x0, y0, x0 + s, y0 + s


def _inside(box: tuple[int, int, int, int], x: float, y: float) -> bool:
    return box[0] <= x < box[2] and box[1] <= y < box[3]


def _draw_grid(draw: ImageDraw.ImageDraw, grid: Grid, size: int, rng: np.random.Generator, broken) -> None:
    x0, y0, x1, y1 = (v * size + rng.normal(0, 0.006) * size for v in (grid.x0, grid.y0, grid.x1, grid.y1))
    draw.rectangle((x0, y0, x1, y1), fill=_jitter_colour(rng, grid.plate))
    cw, ch = (x1 - x0) / grid.cols, (y1 - y0) / grid.rows
    colour = _jitter_colour(rng, grid.colour)
    frame = tuple(int(c * 0.5) for c in colour)
    for r in range(grid.rows):
        for c in range(grid.cols):
            ex, ey = x0 + (c + 0.5) * cw, y0 + (r + 0.5) * ch
            hw, hh = cw * grid.fill / 2, ch * grid.fill / 2
            if broken is not None and _inside(broken[0], ex, ey):
                fault = broken[1].uniform()
                if fault < 0.3 * broken[2]:
                    continue  # missing element
                if fault < 0.7 * broken[2]:  # misaligned
                    ex += broken[1].choice([-1, 1]) * broken[1].uniform(0.25, 0.5) * cw
                    ey += broken[1].choice([-1, 1]) * broken[1].uniform(0.2, 0.45) * ch
                elif fault < 0.9 * broken[2]:  # wrong size / merged blob
                    k = (
                        broken[1].uniform(1.5, 2.2)
                        if broken[1].uniform() < 0.5
                        else broken[1].uniform(0.3, 0.5)
                    )
                    hw, hh = hw * k, hh * k * broken[1].uniform(0.7, 1.3)
            box = (ex - hw, ey - hh, ex + hw, ey + hh)
            if grid.element == "dot":
                draw.ellipse(box, fill=colour)
            elif grid.element == "window":
                draw.rectangle(box, fill=colour, outline=frame, width=max(1, int(min(hw, hh) * 0.25)))
                draw.line((ex, ey - hh, ex, ey + hh), fill=frame, width=max(1, int(min(hw, hh) * 0.12)))
            else:
                draw.rectangle(box, fill=colour)


def _draw_text(
    draw: ImageDraw.ImageDraw, text: TextBlock, size: int, rng: np.random.Generator, garbled
) -> None:
    gh = text.glyph_h * size * (1 + rng.normal(0, 0.03))
    gw, step, line = gh * 0.6, gh * 0.85, gh * 1.6
    x0, y0 = text.x * size + rng.normal(0, 0.008) * size, text.y * size + rng.normal(0, 0.008) * size
    longest = max(len(row) for row in text.rows)
    pad = gh * 0.5
    draw.rectangle(
        (x0 - pad, y0 - pad, x0 + longest * step + pad, y0 + len(text.rows) * line), fill=text.plate
    )
    colour = _jitter_colour(rng, text.colour, 6)
    width = max(1, int(round(gh * 0.13)))
    for r, row in enumerate(text.rows):
        for i, glyph in enumerate(row):
            if glyph < 0:
                continue
            gx, gy = x0 + i * step, y0 + r * line
            if garbled is not None and _inside(garbled[0], gx + gw / 2, gy + gh / 2):
                g = garbled[1]  # malformed strokes: off-grid ends, broken baseline, wrong sizes, overlaps
                k = g.uniform(0.6, 1.6)
                oy = g.normal(0, 0.35) * gh
                for _ in range(int(g.integers(2, 6))):
                    ax, ay, bx, by = g.uniform(-0.3, 1.3, 4)
                    draw.line(
                        (gx + ax * gw * k, gy + oy + ay * gh * k, gx + bx * gw * k, gy + oy + by * gh * k),
                        fill=colour,
                        width=max(1, int(width * g.uniform(0.5, 2.2))),
                    )
                continue
            for a, b in GLYPHS[glyph]:
                (ax, ay), (bx, by) = _NODES[a], _NODES[b]
                draw.line((gx + ax * gw, gy + ay * gh, gx + bx * gw, gy + by * gh), fill=colour, width=width)


def render_scene(
    scene: Scene, size: int, rng: np.random.Generator, structural: tuple | None = None
) -> Image.Image:
    """One system's jittered rendering of a scene; ``structural`` = (kind, box, rng, strength) breaks the grid or text."""
    canvas = Image.fromarray(_background(scene, size, rng))
    for panel in scene.panels:
        _paste_panel(canvas, _jittered(panel, rng), size)
    draw = ImageDraw.Draw(canvas)
    width = max(1, size // 200)
    for obj in scene.objects:
        o = _jittered(obj, rng)
        _draw_shape(draw, o, size, fill=o.colour, outline=o.outline, width=width)
    broken = garbled = None
    if structural is not None:
        kind, box, defect_rng, strength = structural
        if kind == "broken_grid":
            broken = (box, defect_rng, min(strength, 1.0 / 0.9))
        else:
            garbled = (box, defect_rng)
    if scene.grid:
        _draw_grid(draw, scene.grid, size, rng, broken)
    if scene.text:
        _draw_text(draw, scene.text, size, rng, garbled)
    return canvas


# ----------------------------------------------------------------------------------------- image defects
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


def _smear(arr: np.ndarray, box, rng, strength: float) -> None:
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


def _noise_burst(arr: np.ndarray, box, rng, strength: float) -> None:
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    sigma = 0.22 * 255 * strength
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * sigma
    mask = _blob_mask(h, w, rng, 0.3)
    region = arr[y0:y1, x0:x1].astype(np.float32)
    arr[y0:y1, x0:x1] = np.clip(region + noise * mask, 0, 255).astype(np.uint8)


def _banding(arr: np.ndarray, box, rng, strength: float) -> None:
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


def _warp(arr: np.ndarray, box, rng, strength: float) -> None:
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


def _seam(arr: np.ndarray, box, rng, strength: float, anchors: list[tuple[float, float]]) -> None:
    x0, y0, x1, y1 = box
    size = arr.shape[0]
    s = x1 - x0
    if rng.uniform() < 0.5:
        # Duplicated patch: content from another part of the scene pasted with hard edges.
        far = [
            a
            for a in anchors
            if math.hypot(a[0] * size - (x0 + s / 2), a[1] * size - (y0 + s / 2)) > 0.3 * size
        ]
        cx, cy = far[int(rng.integers(len(far)))] if far else (rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8))
        sx0, sy0, sx1, sy1 = _region_box(cx, cy, s / size, size)
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


def applicable_defects(scene: Scene, allowed: Sequence[str] = DEFECT_TYPES) -> list[str]:
    out = [d for d in allowed if d not in ("broken_grid", "garbled_text")]
    if scene.grid and "broken_grid" in allowed:
        out.append("broken_grid")
    if scene.text and "garbled_text" in allowed:
        out.append("garbled_text")
    return out


# A pixel-level defect must change at least this share of its region by more than VISIBLE_LEVELS (of 255);
# a smear or warp that lands on flat colour changes almost nothing, so it is placed again (MAX_PLACEMENTS).
VISIBLE_SHARE = 0.1
VISIBLE_LEVELS = 24
MAX_PLACEMENTS = 5
_PIXEL_DEFECTS = {"smear": _smear, "noise_burst": _noise_burst, "banding": _banding, "warp": _warp}


def render_generation(
    scene: Scene,
    size: int,
    jitter_rng: np.random.Generator,
    defect: str | None = None,
    defect_rng: np.random.Generator | None = None,
    *,
    area: tuple[float, float] = (0.25, 0.45),
    strength: float = 1.0,
) -> Image.Image:
    """Render one system's image of ``scene`` at ``size`` x ``size``, with ``defect`` (a DEFECT_TYPES name) or none."""
    if defect is None or defect == "none":
        return render_scene(scene, size, jitter_rng)
    if defect not in DEFECT_TYPES:
        raise ValueError(f"unknown defect {defect!r}; known: {DEFECT_TYPES}")
    rng = defect_rng if defect_rng is not None else np.random.default_rng()
    side = rng.uniform(*area)
    if defect == "broken_grid" and scene.grid:
        g = scene.grid
        cx, cy = rng.uniform(g.x0 + side / 3, g.x1 - side / 3), rng.uniform(g.y0 + side / 3, g.y1 - side / 3)
        box = _region_box(cx, cy, side, size)
        return render_scene(scene, size, jitter_rng, structural=(defect, box, rng, strength))
    if defect == "garbled_text" and scene.text:
        t = scene.text
        box = _region_box(t.x + rng.uniform(0.15, 0.3), t.y + len(t.rows) * t.glyph_h * 0.8, side, size)
        return render_scene(scene, size, jitter_rng, structural=(defect, box, rng, strength))

    arr = np.array(render_scene(scene, size, jitter_rng))
    best: tuple[float, np.ndarray] | None = None
    for attempt in range(MAX_PLACEMENTS):
        # First tries on textured content, where a smear/warp/seam shows; then anywhere with content.
        anchors = scene.detail_anchors if attempt < 2 and scene.detail_anchors else scene.anchors
        ax, ay = anchors[int(rng.integers(len(anchors)))]
        x0, y0, x1, y1 = box = _region_box(ax + rng.normal(0, 0.04), ay + rng.normal(0, 0.04), side, size)
        trial = arr.copy()
        if defect == "seam":
            _seam(trial, box, rng, strength, scene.anchors)
        else:
            _PIXEL_DEFECTS[defect](trial, box, rng, strength)
        diff = np.abs(trial[y0:y1, x0:x1].astype(np.int16) - arr[y0:y1, x0:x1]).max(axis=2)
        share = float((diff > VISIBLE_LEVELS).mean())
        if best is None or share > best[0]:
            best = (share, trial)
        if share >= VISIBLE_SHARE:
            break
    return Image.fromarray(best[1])


# ------------------------------------------------------------------------------------------------ dataset
def _rng(config: SyntheticConfig, stream: int, *keys: int) -> np.random.Generator:
    # One independent stream per (purpose, prompt, system): any image can be re-rendered on its own.
    return np.random.default_rng([config.seed, stream, *keys])


def plan_defects(config: SyntheticConfig) -> dict[tuple[int, int], bool]:
    """(prompt, system) -> defective; system k gets exactly round(rate_k * num_prompts) defective images."""
    plan = {}
    for k, rate in enumerate(config.system_rates()):
        chosen = set(
            _rng(config, 2, k).permutation(config.num_prompts)[: round(rate * config.num_prompts)].tolist()
        )
        for p in range(config.num_prompts):
            plan[(p, k)] = p in chosen
    return plan


def generate_synthetic_dataset(
    output_dir: str | Path, config: SyntheticConfig | None = None, *, overwrite: bool = False, **overrides
) -> pd.DataFrame:
    """Render the dataset into ``output_dir`` (canonical format) and return its label table.

    ``overrides`` are SyntheticConfig fields. An existing folder made by this generator is replaced; any other
    non-empty folder is refused unless ``overwrite`` (then only ``images/``, the label tables and our
    meta.json/README.md are replaced).
    """
    config = SyntheticConfig(**{**asdict(config or SyntheticConfig()), **overrides})
    out = Path(output_dir)
    _prepare_folder(out, overwrite)
    images = out / "images"
    images.mkdir(parents=True)

    plan = plan_defects(config)
    systems = config.system_names()
    records = []
    for p in range(config.num_prompts):
        scene = make_scene(_rng(config, 0, p))
        choices = applicable_defects(scene, config.defect_types) or list(config.defect_types)
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
            detect = DETECTION[defect] if defect != "none" else config.false_alarm
            votes = int((_rng(config, 4, p, k).uniform(size=config.votes) < detect).sum())
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


def _prepare_folder(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        meta = out / "meta.json"
        ours = False
        if meta.is_file():
            try:
                ours = json.loads(meta.read_text()).get("generator") == GENERATOR
            except (ValueError, OSError):
                ours = False
        if not ours and not overwrite:
            raise FileExistsError(f"{out} is not empty and was not made by {GENERATOR}; pass overwrite=True")
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
