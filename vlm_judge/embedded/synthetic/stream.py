"""A training stream of synthetic assessor logs rendered on the fly: every image is new, so a from-scratch model
cannot memorise scenes and has to learn the defects.

Each scene is drawn fresh and rendered twice with the same jitter, once clean and once with a defect ("twins":
the defect is the only difference between the two, so the pair's gradient is about the defect, not the scene);
the two rows come one after the other, so a batch of an even size holds whole pairs. Labels come from the same
assessor simulation as the logs on disk (``config.votes`` votes, per-type detection, ``config.false_alarm``).

An optional curriculum (off by default; the recipe trains on every type at the logs' sizes from step 0): the
defect types join one at a time in the order of ``types``, every ``add_every`` steps, and the ones already in stay
in the mix; the defect region's side shrinks linearly from ``area_start`` to ``config.defect_area`` over
``area_ramp_steps`` steps. It exists for a vision tower trained from scratch, which learns salient defects first.
Images are rendered at ``config.image_size``, never resized.

Scenes are drawn from streams keyed by (``config.seed``, STREAM_PURPOSE, index[, ``stream_seed``]), disjoint
from the ones generate_synthetic_dataset uses (purposes 0-4), so the stream never repeats a prompt of the logs on
disk; ``stream_seed`` draws another stream (run-to-run variance of a recipe) without touching those logs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import SyntheticConfig
from .defects import DEFECTS, applicable_defects, render_generation
from .scene import make_scene

STREAM_PURPOSE = 10  # rng stream key of the training stream's scenes (the writer uses 0-4)


@dataclass
class StreamCurriculum:
    types: tuple[str, ...] = (
        "noise_burst",
        "garbled_text",
        "broken_grid",
        "banding",
        "warp",
        "smear",
        "seam",
    )
    add_every: int = 0  # steps between two types joining (0: all types from the start)
    area_start: tuple[float, float] = (0.7, 0.9)  # defect region side at step 0, as a fraction of the image side
    area_ramp_steps: int = 0  # steps over which the side shrinks to the config's defect_area (0: no ramp)
    batch_size: int = 16  # rows per optimizer step (maps a row index to its step)
    stream_seed: int = 0  # another value draws another training stream (same generator, same on-disk logs)
    # Relative draw weight per defect type among those a scene can show (missing types weigh 1; None: uniform,
    # the default stream): more of the types the judge finds hard, at the same images per step.
    type_weights: dict[str, float] | None = None

    def __post_init__(self) -> None:
        self.types = tuple(self.types)
        self.area_start = tuple(float(a) for a in self.area_start)
        unknown = sorted(set(self.types) - set(DEFECTS))
        if unknown or not self.types:
            raise ValueError(f"stream types must be a non-empty subset of {tuple(DEFECTS)}, got {self.types}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size must be even (clean/defective pairs), got {self.batch_size}")
        if self.add_every < 0 or self.area_ramp_steps < 0:
            raise ValueError("add_every and area_ramp_steps must be >= 0")
        if self.type_weights is not None:
            self.type_weights = {str(k): float(v) for k, v in self.type_weights.items()}
            unknown_weighted = sorted(set(self.type_weights) - set(DEFECTS))
            if unknown_weighted or any(not w > 0 for w in self.type_weights.values()):
                raise ValueError(
                    f"type_weights must map defect types of {tuple(DEFECTS)} to weights > 0, got {self.type_weights}"
                )
        if len(self.area_start) != 2 or not 0.05 <= self.area_start[0] <= self.area_start[1] <= 0.9:
            raise ValueError(f"area_start must be (low, high) within [0.05, 0.9], got {self.area_start}")

    def types_at(self, step: int) -> tuple[str, ...]:
        if not self.add_every:
            return self.types
        return self.types[: 1 + step // self.add_every]

    def draw_type(self, choices: list[str], rng: np.random.Generator) -> str:
        if self.type_weights is None:
            return str(rng.choice(choices))
        weights = np.array([self.type_weights.get(c, 1.0) for c in choices])
        return str(rng.choice(choices, p=weights / weights.sum()))

    def area_at(self, step: int, final: tuple[float, float]) -> tuple[float, float]:
        done = 1.0 if not self.area_ramp_steps else min(1.0, step / self.area_ramp_steps)
        return tuple(s + (f - s) * done for s, f in zip(self.area_start, final, strict=True))


def stream_rows(config: SyntheticConfig, curriculum: StreamCurriculum, start: int = 0) -> Iterator[dict[str, Any]]:
    """Endless rows (image: PIL, label, soft_label, prompt_id, defect), twins back to back, from scene ``start``."""
    index = start
    row = 2 * start
    while True:
        key = [config.seed, STREAM_PURPOSE, index]
        rng = np.random.default_rng(key if not curriculum.stream_seed else [*key, curriculum.stream_seed])
        scene = make_scene(rng)
        step = row // curriculum.batch_size
        choices = applicable_defects(scene, curriculum.types_at(step))
        index += 1
        if not choices:
            continue  # e.g. only broken_grid allowed yet and this scene has no grid
        defect = curriculum.draw_type(choices, rng)
        jitter_seed = int(rng.integers(1 << 62))
        area = curriculum.area_at(step, config.defect_area)
        clean = None
        for kind in ("none", defect):
            image = render_generation(
                scene, config.image_size, np.random.default_rng(jitter_seed), kind, rng,
                area=area, strength=config.defect_strength, clean=clean,
            )
            if clean is None:  # the defective twin edits this render instead of rendering the scene again
                clean = image
            detect = DEFECTS[kind].detection if kind != "none" else config.false_alarm
            votes = int((rng.uniform(size=config.votes) < detect).sum())
            yield {
                "image": image,
                "label": int(votes / config.votes >= 0.5),
                "soft_label": votes / config.votes,
                "prompt_id": f"stream-{index - 1:07d}",
                "defect": kind,
            }
            row += 1


def training_stream(synthetic: dict[str, Any], curriculum: dict[str, Any] | None = None) -> Any:
    """A datasets.IterableDataset over stream_rows (what TRL's SFTTrainer takes for a streamed train split)."""
    from datasets import IterableDataset

    config = SyntheticConfig(**synthetic)
    plan = StreamCurriculum(**(curriculum or {}))
    return IterableDataset.from_generator(stream_rows, gen_kwargs={"config": config, "curriculum": plan})
