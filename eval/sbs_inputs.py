"""What the label-free SbS (``python -m eval.sbs``) runs on: the guarded images (labels optional), the systems
and their pairs, the defect-rate threshold (the judge's judge_metadata.json, --threshold or 0.5) and the judge's
scores (each distinct picture judged once, through eval.scoring's per-item cache). Every problem is an
SbsInputError whose message names the input."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pandas as pd

from vlm_judge.judge_metadata import (
    METADATA_FILE,
    JudgeMetadataError,
    read_judge_metadata,
    validation_threshold,
)
from vlm_judge.judges import JudgeSpec

from .scoring import score_judge

# Guard exclusions that mean an image could not be read: a bad input, not a data-quality remark.
IMAGE_PROBLEMS = ("missing_file", "not_image", "truncated", "undecodable", "too_small", "too_large")


class SbsInputError(ValueError):
    """The SbS cannot run on this input; the message names the input and the problem."""


def load_items(dataset: str, *, min_side: int, skip_bad_images: bool) -> tuple[pd.DataFrame, Any]:
    """Guarded rows (labels optional) and the guard report; unreadable images stop the run unless skipped."""
    from vlm_judge.data import load_generations

    frame, report = load_generations(dataset, min_side=min_side)
    bad = [e for e in report.excluded if e.kind in IMAGE_PROBLEMS]
    if bad and not skip_bad_images:
        listed = "; ".join(f"{e.image}: {e.reason}" for e in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise SbsInputError(
            f"{report.source}: {len(bad)} unreadable image(s): {listed}{more}. Fix or remove them, or pass "
            "--skip-bad-images to compare without them"
        )
    if frame.empty:
        raise SbsInputError(f"{report.source}: no usable images ({report.summary()})")
    return frame, report


def select_systems(
    frame: pd.DataFrame, systems: list[str] | None, baseline: str | None, source: str
) -> list[str]:
    """The systems to compare, the baseline first; each must have at least 2 images."""
    available = sorted(frame["system"].unique())
    chosen = list(dict.fromkeys(systems)) if systems else available
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise SbsInputError(
            f"{source}: no system {', '.join(map(repr, unknown))} (systems: {', '.join(available)})"
        )
    if baseline is not None:
        if baseline not in available:
            raise SbsInputError(
                f"{source}: --baseline {baseline!r} is not a system (systems: {', '.join(available)})"
            )
        chosen = [baseline] + [s for s in chosen if s != baseline]
    if len(chosen) < 2:
        raise SbsInputError(f"{source}: an SbS needs two systems (found: {', '.join(chosen) or 'none'})")
    counts = frame["system"].value_counts()
    for system in chosen:
        if counts.get(system, 0) < 2:
            raise SbsInputError(
                f"{source}: system {system!r} has {counts.get(system, 0)} image(s); an SbS needs at least 2 "
                "prompts per system"
            )
    return chosen


def system_pairs(systems: list[str], frame: pd.DataFrame, source: str) -> list[tuple[str, str]]:
    """Every pair (A, B) in the order of ``systems``; a pair without a shared prompt is an input error."""
    prompts = {s: set(frame.loc[frame["system"] == s, "prompt_id"]) for s in systems}
    pairs = list(itertools.combinations(systems, 2))
    for a, b in pairs:
        if not prompts[a] & prompts[b]:
            raise SbsInputError(
                f"{source}: systems {a!r} and {b!r} share no prompt ({len(prompts[a])} and {len(prompts[b])} "
                "prompts); an SbS compares the same prompts rendered by both"
            )
    return pairs


# ---------------------------------------------------------------------------------------------- judge


def _served_model_dir(judge: JudgeSpec) -> Path | None:
    """The local folder the server loaded the judge from (vLLM lists it as the model's ``root``), if any."""
    from vlm_judge.judges import EndpointError, probe

    try:
        models = probe(judge, timeout=5.0)
    except EndpointError:
        return None
    for model in models:
        root = model.get("root")
        if model.get("id") == judge.model and isinstance(root, str) and Path(root).is_dir():
            return Path(root)
    return None


def choose_threshold(
    judge: JudgeSpec, metadata: str | None, threshold: float | None
) -> tuple[float, str]:
    """(threshold, where it came from): judge_metadata.json's validation threshold, else --threshold, else 0.5."""
    path = Path(metadata) if metadata else _served_model_dir(judge)
    if path is not None and path.is_dir():
        path = path / METADATA_FILE
    if metadata and (path is None or not path.is_file()):
        raise SbsInputError(f"--judge-metadata {metadata}: no {METADATA_FILE} there")
    if path is not None and path.is_file():
        try:
            value = validation_threshold(read_judge_metadata(path))
        except JudgeMetadataError as exc:
            raise SbsInputError(str(exc)) from None
        if value is not None:
            note = (
                f" (overrides --threshold {threshold})"
                if threshold is not None and threshold != value
                else ""
            )
            return value, f"validation threshold from {path}{note}"
    if threshold is not None:
        return threshold, "--threshold"
    return 0.5, "default 0.5 (no validation threshold in a judge_metadata.json)"


def score_items(
    judge: JudgeSpec, frame: pd.DataFrame, cache_dir: Path, *, retry_errors: bool, progress: bool
) -> pd.DataFrame:
    """``frame`` with p_defect, error and cached: each distinct picture (decoded pixels) judged once."""
    pictures = frame.drop_duplicates("pixel_sha256")[["image", "image_path", "image_sha256", "pixel_sha256"]]
    pictures = pictures.rename(columns={"image_sha256": "sha256"}).reset_index(drop=True)
    results, reason = score_judge(judge, pictures, cache_dir, retry_errors=retry_errors, progress=progress)
    if results is None:
        raise SbsInputError(
            f"judge {judge.name} ({judge.source}): {reason}; images scored so far are kept in "
            f"{cache_dir / (judge.name + '.jsonl')}"
        )
    results = results.drop(columns="image_path").assign(pixel_sha256=pictures["pixel_sha256"].to_numpy())
    scored = frame.merge(results, on="pixel_sha256", how="left", validate="many_to_one")
    if scored["p_defect"].notna().sum() == 0:
        errors = scored["error"].dropna().astype(str).value_counts().head(3)
        raise SbsInputError(
            f"judge {judge.name} ({judge.source}) scored none of {len(pictures)} images "
            f"(errors: {'; '.join(errors.index) or 'none reported'}); rerun with --retry-errors once fixed"
        )
    return scored
