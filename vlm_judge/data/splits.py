"""Train/validation/test splits grouped by prompt: all generations of one prompt land in one split.

Why grouped: the K systems' images of one prompt share the scene; with a prompt in train and test the judge
would be scored on scenes it has seen, and the SbS comparison (same prompts, different systems) would leak.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pandas as pd

from .format import SPLITS, DataFormatError, as_text, is_missing


def _rank_key(seed: int, prompt_id: str) -> str:
    # Order prompts by a keyed hash, not by a shuffled position: the place of a prompt in the order does not
    # depend on the other prompts, so a log that grows by new prompts moves only prompts near a cut point.
    return hashlib.sha256(f"{seed}\x00{prompt_id}".encode()).hexdigest()


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Prompts per split: largest-remainder rounding of n * fractions (exact total, no banker's rounding)."""
    exact = [n * f for f in fractions]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    if n >= sum(f > 0 for f in fractions):
        # Every split with a non-zero fraction gets at least one prompt when there are enough of them, so a
        # small dataset still has a validation and a test set.
        for i in range(3):
            if fractions[i] > 0 and counts[i] == 0:
                donor = max(range(3), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts


def validate_splits(frame: pd.DataFrame) -> pd.DataFrame:
    """Check a given ``split`` column (values, one split per prompt) and return it normalised (lower-case)."""
    out = frame.copy()
    values = out["split"].map(lambda v: as_text(v).lower())
    empty = [int(r) for r, v in zip(_rows(out), values, strict=True) if not v]
    if empty:
        raise DataFormatError(
            f"split column has empty values (rows {_preview(empty)}); fill them or drop the column"
        )
    bad = sorted(set(values) - set(SPLITS))
    if bad:
        raise DataFormatError(f"split column has value(s) {bad}; allowed: {', '.join(SPLITS)}")
    out["split"] = values.to_numpy()
    spans = out.groupby(out["prompt_id"].map(as_text), sort=True)["split"].agg(lambda s: sorted(set(s)))
    for prompt_id, splits in spans.items():
        if len(splits) > 1:
            raise DataFormatError(
                f"prompt_id {prompt_id!r} is in more than one split ({', '.join(splits)}); "
                "a prompt must stay in one split"
            )
    return out


def split_by_prompt(
    frame: pd.DataFrame, *, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> pd.DataFrame:
    """A copy of ``frame`` with a ``split`` column (train/validation/test), grouped by ``prompt_id``.

    If ``frame`` already has a non-empty ``split`` column it is respected and validated instead (DataFormatError
    for unknown values, empty cells or a prompt in two splits). Otherwise prompts are ordered by a hash of
    (seed, prompt_id) and cut into exact counts of ``fractions`` (train, validation, test): deterministic for a
    seed, independent of row order.
    """
    if "prompt_id" not in frame.columns:
        raise DataFormatError("split_by_prompt needs a prompt_id column")
    if "split" in frame.columns and not frame["split"].map(is_missing).all():
        return validate_splits(frame)
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")

    prompts = sorted(set(frame["prompt_id"].map(as_text)), key=lambda p: _rank_key(seed, p))
    counts = _split_counts(len(prompts), fractions)
    assignment: dict[str, str] = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        for prompt_id in prompts[start : start + count]:
            assignment[prompt_id] = name
        start += count
    out = frame.copy()
    out["split"] = frame["prompt_id"].map(lambda p: assignment[as_text(p)]).to_numpy()
    return out


def _rows(frame: pd.DataFrame) -> list[int]:
    return list(frame["row"]) if "row" in frame.columns else [i + 1 for i in range(len(frame))]


def _preview(items: list[int], limit: int = 10) -> str:
    text = ", ".join(str(i) for i in items[:limit])
    return text + (f", ... ({len(items)} in all)" if len(items) > limit else "")
