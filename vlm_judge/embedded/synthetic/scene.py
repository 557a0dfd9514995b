"""Scene specs: what a prompt asks for (background, textured panels, objects, a grid, a sign) and its prompt text.

All geometry is a fraction of the image side, so one scene renders at any size (render.py).
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

from .glyphs import GLYPHS

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
