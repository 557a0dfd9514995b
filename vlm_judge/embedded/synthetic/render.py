"""Rendering a scene spec: gradient background, textured panels, outlined objects, the grid and the sign text.

``render_scene`` draws one system's jittered variant (all jitter comes from the rng it is given, in a fixed
order). Render-time defects hook into it: ``grid_fault`` is asked about every grid element and ``glyph_fault``
about every glyph (see defects.py); everything else about the rendering is the same with or without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from PIL import Image, ImageDraw

from .glyphs import _NODES, GLYPHS
from .scene import Colour, Grid, Scene, Shape, TextBlock

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels
# (ex, ey, hw, hh, cw, ch) of one grid element -> its (ex, ey, hw, hh), or None to leave it out.
GridFault = Callable[[float, float, float, float, float, float], "tuple | None"]
# (draw, gx, gy, gw, gh, colour, width) of one glyph -> True when it drew the glyph itself (the normal is skipped).
GlyphFault = Callable[[ImageDraw.ImageDraw, float, float, float, float, Colour, int], bool]


def _jitter_colour(rng: np.random.Generator, c: Colour, amount: int = 10) -> Colour:
    # Python min/max: np.clip on scalars was a tenth of the training stream's rendering time
    return tuple(min(255, max(0, int(v + rng.integers(-amount, amount + 1)))) for v in c)  # type: ignore[return-value]


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
    return replace(  # a shallow copy (asdict deep-copies every field: slow, and fields are immutable)
        shape,
        cx=shape.cx + rng.normal(0, 0.012),
        cy=shape.cy + rng.normal(0, 0.012),
        w=shape.w * scale,
        h=shape.h * scale,
        angle=shape.angle + rng.normal(0, 0.05),
        colour=_jitter_colour(rng, shape.colour),
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


def region_box(cx: float, cy: float, side: float, size: int) -> Box:
    s = int(round(side * size))
    x0 = int(np.clip(round(cx * size - s / 2), 0, size - s))
    y0 = int(np.clip(round(cy * size - s / 2), 0, size - s))
    return x0, y0, x0 + s, y0 + s


def inside(box: Box, x: float, y: float) -> bool:
    return box[0] <= x < box[2] and box[1] <= y < box[3]


def _draw_grid(
    draw: ImageDraw.ImageDraw, grid: Grid, size: int, rng: np.random.Generator, fault: GridFault | None
) -> None:
    x0, y0, x1, y1 = (v * size + rng.normal(0, 0.006) * size for v in (grid.x0, grid.y0, grid.x1, grid.y1))
    draw.rectangle((x0, y0, x1, y1), fill=_jitter_colour(rng, grid.plate))
    cw, ch = (x1 - x0) / grid.cols, (y1 - y0) / grid.rows
    colour = _jitter_colour(rng, grid.colour)
    frame = tuple(int(c * 0.5) for c in colour)
    for r in range(grid.rows):
        for c in range(grid.cols):
            ex, ey = x0 + (c + 0.5) * cw, y0 + (r + 0.5) * ch
            hw, hh = cw * grid.fill / 2, ch * grid.fill / 2
            if fault is not None:
                element = fault(ex, ey, hw, hh, cw, ch)
                if element is None:
                    continue
                ex, ey, hw, hh = element
            box = (ex - hw, ey - hh, ex + hw, ey + hh)
            if grid.element == "dot":
                draw.ellipse(box, fill=colour)
            elif grid.element == "window":
                draw.rectangle(box, fill=colour, outline=frame, width=max(1, int(min(hw, hh) * 0.25)))
                draw.line((ex, ey - hh, ex, ey + hh), fill=frame, width=max(1, int(min(hw, hh) * 0.12)))
            else:
                draw.rectangle(box, fill=colour)


def _draw_text(
    draw: ImageDraw.ImageDraw, text: TextBlock, size: int, rng: np.random.Generator, fault: GlyphFault | None
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
            if fault is not None and fault(draw, gx, gy, gw, gh, colour, width):
                continue
            for a, b in GLYPHS[glyph]:
                (ax, ay), (bx, by) = _NODES[a], _NODES[b]
                draw.line((gx + ax * gw, gy + ay * gh, gx + bx * gw, gy + by * gh), fill=colour, width=width)


def render_scene(
    scene: Scene,
    size: int,
    rng: np.random.Generator,
    *,
    grid_fault: GridFault | None = None,
    glyph_fault: GlyphFault | None = None,
) -> Image.Image:
    """One system's jittered rendering of a scene, with the render-time defect hooks ``grid_fault`` and
    ``glyph_fault`` (render.py's docstring)."""
    canvas = Image.fromarray(_background(scene, size, rng))
    for panel in scene.panels:
        _paste_panel(canvas, _jittered(panel, rng), size)
    draw = ImageDraw.Draw(canvas)
    width = max(1, size // 200)
    for obj in scene.objects:
        o = _jittered(obj, rng)
        _draw_shape(draw, o, size, fill=o.colour, outline=o.outline, width=width)
    if scene.grid:
        _draw_grid(draw, scene.grid, size, rng, grid_fault)
    if scene.text:
        _draw_text(draw, scene.text, size, rng, glyph_fault)
    return canvas
