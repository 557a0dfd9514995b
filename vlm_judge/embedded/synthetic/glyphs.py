"""The fixed glyph alphabet of the scenes' sign text: stroke glyphs on a 3x3 node grid, the same for every seed."""

from __future__ import annotations

import numpy as np


def _make_glyphs() -> list[list[tuple[int, int]]]:
    # Like a segment display: 20 possible segments, 2-4 per glyph, drawn from a fixed seed.
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
