"""Assessor-log data: the canonical format (see ``format.py``), the quality guard, prompt-grouped splits,
and the Hugging Face dataset view (the embedded default's synthetic logs: vlm_judge.embedded.synthetic).

    from vlm_judge.data import load_assessor_logs, load_generations, load_judge_dataset
    frame, report = load_assessor_logs("data/synthetic")      # pandas, kept rows + GuardReport
    ds = load_judge_dataset("data/synthetic")                  # DatasetDict train/validation/test, Image column
    frame, report = load_generations("renders/")               # labels optional, or DIR/<system>/<prompt_id>.png
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from vlm_judge.images import file_sha256

from .folders import folder_table, is_folder_layout
from .format import (
    SPLITS,
    DataFormatError,
    as_text,
    check_columns,
    dataset_root,
    find_label_table,
    read_label_table,
)
from .guard import ExcludedRow, GuardReport, NotedRow, guard_table
from .splits import split_by_prompt, validate_splits

if TYPE_CHECKING:
    import datasets

__all__ = [
    "DATASET_COLUMNS",
    "SPLITS",
    "DataFormatError",
    "ExcludedRow",
    "GuardReport",
    "NotedRow",
    "dataset_fingerprint",
    "find_label_table",
    "load_assessor_logs",
    "load_generations",
    "load_judge_dataset",
    "split_by_prompt",
    "validate_splits",
]

logger = logging.getLogger(__name__)

# The columns of load_judge_dataset, in this order.
DATASET_COLUMNS = (
    "image",
    "image_path",
    "prompt_id",
    "system",
    "label",
    "soft_label",
    "defect",
    "prompt",
    "split",
)


def load_assessor_logs(
    root: str | Path, *, min_side: int = 256, check_images: bool = True
) -> tuple[pd.DataFrame, GuardReport]:
    """Read a dataset folder (or a label-table file), run the quality guard, return the kept rows and the report.

    Raises DataFormatError only for whole-file problems (no/unreadable table, missing required columns); bad
    rows are excluded and listed in the report. A one-line summary is logged (WARNING when rows were excluded).
    """
    table = find_label_table(root)
    raw = read_label_table(table)
    check_columns(raw, table)
    frame, report = guard_table(
        raw, dataset_root(table), source=str(table), min_side=min_side, check_images=check_images
    )
    logger.log(logging.WARNING if report.excluded else logging.INFO, report.summary())
    return frame, report


def load_generations(root: str | Path, *, min_side: int = 256) -> tuple[pd.DataFrame, GuardReport]:
    """Generations to compare side by side, assessors' labels optional: a canonical dataset folder (or table
    file) whose label/vote columns may be absent or empty, or a folder DIR/<system>/<prompt_id>.<ext> (see
    folders.py). The same quality guard as load_assessor_logs; rows without labels have ``label`` <NA>."""
    if is_folder_layout(root):
        raw, base, source = folder_table(root), Path(root).resolve(), f"{root} (folder layout)"
    else:
        table = find_label_table(root)
        raw, base, source = read_label_table(table), dataset_root(table), str(table)
        check_columns(raw, table, require_labels=False)
    frame, report = guard_table(raw, base, source=source, min_side=min_side, require_labels=False)
    logger.log(logging.WARNING if report.excluded else logging.INFO, report.summary())
    return frame, report


def load_judge_dataset(
    root: str | Path, *, split: str | None = None, seed: int = 0, min_side: int = 256
) -> datasets.DatasetDict | datasets.Dataset:
    """The guarded dataset as Hugging Face ``datasets``: a DatasetDict of the non-empty splits, or one split.

    Columns: DATASET_COLUMNS; ``image`` is an ``Image()`` feature decoded lazily from ``image_path``. Splits come
    from the table's ``split`` column when it has one, else from split_by_prompt(seed=seed).
    """
    import datasets  # heavy import, only needed here

    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    frame, report = load_assessor_logs(root, min_side=min_side)
    if frame.empty:
        raise DataFormatError(f"{report.source}: no usable rows ({report.summary()})")
    frame = split_by_prompt(frame, seed=seed)
    frame = frame.assign(image=frame["image_path"])[list(DATASET_COLUMNS)].reset_index(drop=True)

    def to_dataset(part: pd.DataFrame) -> datasets.Dataset:
        ds = datasets.Dataset.from_pandas(part.reset_index(drop=True), preserve_index=False)
        return ds.cast_column("image", datasets.Image())

    if split is not None:
        part = frame[frame["split"] == split]
        if part.empty:
            raise DataFormatError(f"{report.source}: split {split!r} is empty")
        return to_dataset(part)
    return datasets.DatasetDict(
        {name: to_dataset(frame[frame["split"] == name]) for name in SPLITS if (frame["split"] == name).any()}
    )


# (absolute path, size, mtime_ns) -> sha256: re-fingerprinting an unchanged folder reads no image twice.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _cached_sha256(path: str) -> str:
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = file_sha256(path)
    return _HASH_CACHE[key]


def dataset_fingerprint(root: str | Path) -> str:
    """sha256 over the label table's bytes and the (relative path, sha256) of every image it names, sorted.

    Identifies the exact data a model was trained/evaluated on (MLflow, merge metadata). Files the table does
    not name do not count; a named file that is missing counts as "missing".
    """
    table = find_label_table(root)
    base = dataset_root(table)
    raw = read_label_table(table)
    check_columns(raw, table)
    digest = hashlib.sha256()
    digest.update(table.name.encode() + b"\x00" + file_sha256(table).encode() + b"\n")
    images = sorted({as_text(v) for v in raw["image"]} - {""})
    for image in images:
        path = os.path.normpath(base / image)
        file_hash = _cached_sha256(path) if os.path.isfile(path) else "missing"
        digest.update(f"{image}\x00{file_hash}\n".encode())
    return digest.hexdigest()
