"""The canonical assessor-log format and the raw reading of its label table.

Canonical dataset
-----------------
A folder::

    DIR/
      images/...                   the generations (any format PIL decodes; PNG/JPEG/WebP usual)
      labels.csv                   or labels.jsonl (one JSON object per line) or labels.parquet -- exactly one

Columns of the label table (header names are case-insensitive, surrounding spaces ignored):

| column | required | meaning |
|---|---|---|
| `image` | yes | image path relative to DIR, e.g. `images/p0001_gen-v2.png` |
| `prompt_id` | yes | id of the text prompt; splits are grouped by it (a prompt never spans two splits) |
| `system` | yes | generator version that made the image, e.g. `gen-v3` (side-by-side comparisons) |
| `label` | `label` or both votes | 1 = defective, 0 = clean |
| `defect_votes`, `total_votes` | `label` or both votes | assessors who saw a defect, out of how many |
| `prompt` | no | the prompt text |
| `defect` | no | defect type, `none` for a clean image |
| `split` | no | `train` / `validation` / `test`; when given it is used as is (validated) |

Labels: with votes, ``soft_label = defect_votes / total_votes`` and the hard ``label = int(soft_label >= 0.5)``
(a tie counts as defective). If a ``label`` column is present too, its value is the hard label and the votes
still give the soft label. A row without votes uses ``soft_label = label``. Other columns are kept untouched.

Row numbers in reports count data rows from 1 (the header is not a row): row 1 is line 2 of a CSV and line 1
of a JSONL file (blank JSONL lines are skipped, not counted).

Whole-file problems (no table, several tables, unparseable file, missing required columns) raise
DataFormatError naming the file; problems of single rows never raise: the guard (``guard.py``) excludes the
row and reports why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

TABLE_NAMES = ("labels.csv", "labels.jsonl", "labels.parquet")
REQUIRED_COLUMNS = ("image", "prompt_id", "system")
VOTE_COLUMNS = ("defect_votes", "total_votes")
LABEL_COLUMN = "label"
OPTIONAL_COLUMNS = ("prompt", "defect", "split")
SPLITS = ("train", "validation", "test")


class DataFormatError(ValueError):
    """The label table as a whole cannot be used (the message names the file and what is wrong)."""


def find_label_table(root: str | Path) -> Path:
    """The label table of a dataset folder (or ``root`` itself when it is a table file)."""
    root = Path(root)
    if root.is_file():
        if root.name.endswith((".csv", ".jsonl", ".parquet")):
            return root
        raise DataFormatError(f"{root}: not a label table (expected .csv, .jsonl or .parquet)")
    if not root.is_dir():
        raise DataFormatError(f"{root}: dataset folder does not exist")
    found = [root / name for name in TABLE_NAMES if (root / name).is_file()]
    if not found:
        raise DataFormatError(f"{root}: no label table (expected one of {', '.join(TABLE_NAMES)})")
    if len(found) > 1:
        # Two tables could disagree; picking one silently would hide that.
        raise DataFormatError(f"{root}: several label tables ({', '.join(p.name for p in found)}); keep one")
    return found[0]


def dataset_root(table: Path) -> Path:
    """Image paths in a table are relative to the folder holding it."""
    return table.resolve().parent


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return value is pd.NA or value is pd.NaT


def as_text(value: Any) -> str:
    """A cell as text, identical for the three formats: 3 (jsonl), 3.0 (parquet with NaNs) and "3" (csv) -> "3"."""
    if is_missing(value):
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return as_text(value.item())
    return str(value).strip()


def read_label_table(path: str | Path) -> pd.DataFrame:
    """The table as read, every cell an object (str/number/None); column names stripped and lower-cased."""
    path = Path(path)
    try:
        if path.suffix == ".csv":
            # Everything as text: validation (not pandas' type guessing) decides what a cell means.
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
        elif path.suffix == ".jsonl":
            frame = _read_jsonl(path)
        elif path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise DataFormatError(f"{path}: unknown table format {path.suffix!r} (csv, jsonl, parquet)")
    except DataFormatError:
        raise
    except FileNotFoundError:
        raise DataFormatError(f"{path}: label table does not exist") from None
    except Exception as exc:  # pandas/pyarrow raise many types; any of them means the file is unusable
        raise DataFormatError(
            f"{path}: cannot be read as a label table ({type(exc).__name__}: {exc})"
        ) from None
    frame = frame.astype(object)
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    if frame.columns.duplicated().any():
        dupes = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise DataFormatError(f"{path}: duplicate column(s) {dupes}")
    return frame.reset_index(drop=True)


def _read_jsonl(path: Path) -> pd.DataFrame:
    # A hand-rolled reader so a broken line names its line number (pandas' error does not).
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}: line {number} is not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataFormatError(f"{path}: line {number} is not a JSON object")
            records.append(record)
    return pd.DataFrame.from_records(records)


def check_columns(frame: pd.DataFrame, path: str | Path, *, require_labels: bool = True) -> None:
    """Raise DataFormatError naming the file and the missing columns (labels only when ``require_labels``)."""
    columns = set(frame.columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    has_votes = all(c in columns for c in VOTE_COLUMNS)
    if not require_labels:
        partial = [c for c in VOTE_COLUMNS if c in columns]
        if partial and not has_votes and LABEL_COLUMN not in columns:
            missing += [c for c in VOTE_COLUMNS if c not in columns]  # half a vote pair is a broken table
    elif LABEL_COLUMN not in columns and not has_votes:
        partial = [c for c in VOTE_COLUMNS if c in columns]
        if partial:
            missing += [c for c in VOTE_COLUMNS if c not in columns]
        else:
            missing.append("label (or defect_votes + total_votes)")
    if missing:
        raise DataFormatError(
            f"{path}: missing required column(s): {', '.join(missing)} (found: {', '.join(frame.columns) or 'none'})"
        )
