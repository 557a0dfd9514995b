"""Which images get a defect, and the simulated assessors' votes on each image."""

from __future__ import annotations

import numpy as np

from .config import SyntheticConfig
from .defects import DEFECTS


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


def assessor_votes(config: SyntheticConfig, prompt: int, system: int, defect: str) -> int:
    """How many of ``config.votes`` assessors flag the image: each notices ``defect`` with its DefectType's
    ``detection`` probability, and flags a clean image (``"none"``) with probability ``config.false_alarm``."""
    detect = DEFECTS[defect].detection if defect != "none" else config.false_alarm
    return int((_rng(config, 4, prompt, system).uniform(size=config.votes) < detect).sum())
