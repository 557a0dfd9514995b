"""Synthetic assessor logs: procedurally rendered "generations" by K systems with generation-like defects.

This is the embedded default dataset (numpy + PIL only, no downloads). For every prompt a scene spec is drawn
(gradient background, textured panels, solid objects, a grid of windows/dots, rows of text-like glyphs); each
of K systems renders its own jittered variant of the scene. System k has its own defect rate (spread linearly
from ``defect_rates[0]`` to ``defect_rates[1]``); exactly ``round(rate * num_prompts)`` of its images get one
defect, so realised per-system rates differ as designed and side-by-side comparisons between systems are
meaningful. Defects (DEFECT_TYPES, the registry in defects.py):

- ``smear``         directional motion blur of a blob-shaped region
- ``seam``          a patch cloned from elsewhere in the image, or a region torn and shifted along a seam line
- ``warp``          a melted region: smooth random displacement plus downward sag and drips
- ``noise_burst``   strong per-pixel colour noise in a blob
- ``banding``       posterised region (few colour levels, hard band edges)
- ``broken_grid``   the repeated structure with missing, misaligned and mis-sized elements (scenes with a grid)
- ``garbled_text``  glyph rows replaced by malformed strokes with broken baseline and sizes (scenes with text)

Every size is relative to ``image_size`` and each image is rendered directly at that size (no resize of the
image anywhere: a resize averages small defects away). The defect region is a square whose side is a fraction
``defect_area`` (default 25-45 %) of the image side, centred on scene content, so the defect stays visible at
any rendered size; ``defect_strength`` scales intensities. A ``broken_grid`` region wider than the grid is
centred on it. Nothing system-specific is rendered besides the defect rate (no per-system style), so a judge
cannot tell the system, and with it the defect rate, by style. A planned defect is always rendered: when
``defect_types`` allows only scene-dependent types and a prompt's scene can show none of them (e.g. only
``broken_grid`` and no grid), that prompt's scene is drawn again (writer.scene_for_prompt).

Assessors: each of ``votes`` assessors flags a defective image with a per-type detection probability
(DETECTION) and a clean one with probability ``false_alarm``; ``label`` is the majority vote
(``defect_votes / total_votes >= 0.5``, the loader's rule). Output is the canonical format (see format.py) with
``split`` assigned by split_by_prompt, plus ``meta.json`` and ``README.md``. Everything is a function of the
seed: the same arguments give the same images and a byte-identical labels.csv.

Modules: scene.py (scene specs, prompt text), glyphs.py, render.py (rendering, the render-time hooks),
defects.py (the registry, the defects, their placement), config.py (SyntheticConfig), assessors.py (which
images get a defect, votes), writer.py (generate_synthetic_dataset, meta.json, README.md).

Adding a defect type: append one ``DefectType(name, detection, apply, applies=None, summary=...)`` to
``_REGISTRY`` in defects.py; DEFECT_TYPES, DETECTION, SyntheticConfig's validation and default, the CLI's
``--defect_types`` choices, applicable_defects, render_generation and the assessor votes all read it from
there. An image-space defect is ``apply=image_defect(edit)`` with ``edit(arr, box, rng, strength, scene)``
changing the uint8 pixels inside ``box`` in place (placement on content and the visibility retries are
shared); one that needs certain content sets ``applies=lambda scene: ...``. A defect of the grid or the text
drawn at render time writes its own ``apply`` that picks a box and calls render_scene with a ``grid_fault`` /
``glyph_fault`` hook (see _broken_grid, _garbled_text); breaking other content at render time needs a new hook
in render.py. A new type joins the default ``defect_types`` and so changes the default datasets: bump
GENERATOR_VERSION and the golden hashes in tests/test_synthetic.py.
"""

from __future__ import annotations

from .assessors import assessor_votes, plan_defects
from .config import SyntheticConfig
from .defects import (
    DEFECT_TYPES,
    DEFECTS,
    DETECTION,
    MAX_PLACEMENTS,
    VISIBLE_LEVELS,
    VISIBLE_SHARE,
    DefectType,
    applicable_defects,
    image_defect,
    render_generation,
)
from .glyphs import GLYPHS
from .render import render_scene
from .scene import Colour, Grid, Scene, Shape, TextBlock, colour_name, describe_scene, make_scene
from .writer import (
    GENERATOR,
    GENERATOR_VERSION,
    MAX_SCENE_DRAWS,
    generate_synthetic_dataset,
    scene_for_prompt,
)

__all__ = [
    "DEFECTS",
    "DEFECT_TYPES",
    "DETECTION",
    "GENERATOR",
    "GENERATOR_VERSION",
    "GLYPHS",
    "MAX_PLACEMENTS",
    "MAX_SCENE_DRAWS",
    "VISIBLE_LEVELS",
    "VISIBLE_SHARE",
    "Colour",
    "DefectType",
    "Grid",
    "Scene",
    "Shape",
    "SyntheticConfig",
    "TextBlock",
    "applicable_defects",
    "assessor_votes",
    "colour_name",
    "describe_scene",
    "generate_synthetic_dataset",
    "image_defect",
    "make_scene",
    "plan_defects",
    "render_generation",
    "render_scene",
    "scene_for_prompt",
]
