"""SyntheticConfig: every argument of the generator, validated."""

from __future__ import annotations

from dataclasses import dataclass

from .defects import DEFECT_TYPES, DEFECTS


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
        unknown = set(self.defect_types) - set(DEFECTS)
        if unknown or not self.defect_types:
            raise ValueError(
                f"defect_types must be a non-empty subset of {tuple(DEFECTS)}, got {self.defect_types}"
            )

    def system_names(self) -> list[str]:
        return [f"gen-v{k + 1}" for k in range(self.num_systems)]

    def system_rates(self) -> list[float]:
        low, high = self.defect_rates
        if self.num_systems == 1:
            return [low]
        return [low + (high - low) * k / (self.num_systems - 1) for k in range(self.num_systems)]
