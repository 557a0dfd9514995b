"""judge_metadata.json: the record a merged judge carries in its model folder.

vlm_judge.merge writes it (base model, git commit, recipe, dataset fingerprint, prompt version, pixel bounds, eval
metrics); vlm_judge.serve reads the training pixel bounds and prompt version from it, eval.sbs the validation
threshold. Light on purpose (no torch): the label-free SbS imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METADATA_FILE = "judge_metadata.json"
# Where a merged judge's validation threshold may stand (top level or under "metrics"), first match wins.
THRESHOLD_KEYS = ("validation_threshold", "threshold_val", "eval_threshold_val")


class JudgeMetadataError(ValueError):
    """judge_metadata.json exists but is not a JSON object; the message names the file."""


def read_judge_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a model folder (or of the file itself); {} when the folder has none."""
    path = Path(path)
    if path.is_dir():
        path = path / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JudgeMetadataError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise JudgeMetadataError(f"{path} must hold a JSON object")
    return data


def trained_pixel_bounds(metadata: dict[str, Any]) -> tuple[int, int] | None:
    """(min_pixels, max_pixels) the judge was trained at, if the metadata records them."""
    bounds = metadata.get("pixel_bounds")
    if isinstance(bounds, dict) and bounds.get("min_pixels") and bounds.get("max_pixels"):
        return int(bounds["min_pixels"]), int(bounds["max_pixels"])
    return None


def validation_threshold(metadata: dict[str, Any]) -> float | None:
    """The validation threshold the metadata carries (top level or under ``metrics``), if any."""
    for place in (metadata, metadata.get("metrics") or {}):
        for key in THRESHOLD_KEYS:
            value = place.get(key) if isinstance(place, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
                return float(value)
    return None
