"""The data-quality guard: every row of a label table is either kept (normalised) or excluded with a reason.

It never raises on a bad row and never drops one silently: each excluded row is in the GuardReport with its
row number, image and reason. Checks, in order (the first failing one is the reason):

=================== =================================================================================
kind                reason text starts with
=================== =================================================================================
missing_value       ``missing value in required column(s) ...``
bad_votes           ``votes out of range: ...`` (negative, defect_votes > total_votes, total_votes == 0,
                    non-numeric, not a whole number)
bad_label           ``label not 0/1: ...``
duplicate_row       ``duplicate row for <image> (first at row N)`` (same image path as an earlier row)
missing_file        ``image file missing: <path>``
not_image           ``not an image ...`` (e.g. a text file named .png)
truncated           ``truncated file ...``
undecodable         ``cannot be decoded ...`` / ``file is empty`` / other decoder errors
too_small           ``too small: WxH, each side must be >= N px``
too_large           ``too large: ...`` (decompression-bomb guard of images.load_image)
duplicate_image     ``duplicate of <image> (row N)`` (same decoded pixels as an earlier kept row of the
                    same system and prompt)
=================== =================================================================================

Duplicate images are found by a hash of the decoded pixels (not the file bytes), so the same picture saved
twice with different PNG settings or metadata still counts as a duplicate. Only a *true* duplicate is excluded:
the same path twice (``duplicate_row``) or the same pixels for the same system and prompt. Two systems that drew
the same picture (e.g. for the same prompt and seed) are a legitimate side-by-side: such rows are kept and
*noted* (``GuardReport.notes``, kind ``shared_image``); kept rows carry ``pixel_sha256`` so a scorer can judge
the picture once for all of them. Without labels required (``require_labels=False``, label-free SbS), a row
without label or votes is kept with ``label``/``soft_label`` missing instead of being excluded.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vlm_judge.images import ImageError, load_image

from .format import LABEL_COLUMN, OPTIONAL_COLUMNS, REQUIRED_COLUMNS, VOTE_COLUMNS, as_text, is_missing


@dataclass(frozen=True)
class ExcludedRow:
    row: int  # 1-based data row of the label table
    image: str  # the ``image`` cell as written
    kind: str  # short machine-readable class, see the module docstring
    reason: str  # human-readable, names the value or file at fault


@dataclass(frozen=True)
class NotedRow:
    row: int  # 1-based data row of the label table (a kept row)
    image: str
    kind: str  # "shared_image"
    note: str  # e.g. "same pixels as images/a.png (row 3, system gen-v1, prompt p1): kept, scored once"


@dataclass
class GuardReport:
    source: str  # the label table
    total: int = 0
    excluded: list[ExcludedRow] = field(default_factory=list)
    notes: list[NotedRow] = field(default_factory=list)  # kept rows worth a remark

    @property
    def kept(self) -> int:
        return self.total - len(self.excluded)

    def counts(self) -> dict[str, int]:
        """Excluded rows per kind, most frequent first."""
        return dict(Counter(e.kind for e in self.excluded).most_common())

    def summary(self) -> str:
        """One line: what was kept and why the rest was excluded."""
        text = f"data guard: kept {self.kept} of {self.total} rows from {self.source}"
        if not self.excluded:
            text += "; nothing excluded"
        else:
            kinds = ", ".join(f"{n} {kind}" for kind, n in self.counts().items())
            text += f"; excluded {len(self.excluded)} ({kinds})"
        if self.notes:
            text += f"; {len(self.notes)} kept rows share their pixels with another system's or prompt's row"
        return text

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            [(e.row, e.image, e.kind, e.reason) for e in self.excluded],
            columns=["row", "image", "kind", "reason"],
        )

    def to_csv(self, path: str | Path) -> Path:
        """Write the excluded rows (row, image, kind, reason); an empty table when nothing was excluded."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "image", "kind", "reason"])
            for e in self.excluded:
                writer.writerow([e.row, e.image, e.kind, e.reason])
        return path

    def __str__(self) -> str:
        lines = [self.summary()]
        lines += [f"  row {e.row} ({e.image}): {e.reason}" for e in self.excluded]
        lines += [f"  row {n.row} ({n.image}), kept: {n.note}" for n in self.notes]
        return "\n".join(lines)


class _RowError(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def _parse_count(name: str, value: Any) -> int:
    text = as_text(value)
    try:
        number = float(text)
    except ValueError:
        raise _RowError("bad_votes", f"votes out of range: {name}={text!r} is not a number") from None
    if not math.isfinite(number) or not number.is_integer():
        raise _RowError("bad_votes", f"votes out of range: {name}={text!r} is not a whole number")
    if number < 0:
        raise _RowError("bad_votes", f"votes out of range: {name}={int(number)} is negative")
    return int(number)


def _parse_label(value: Any) -> int:
    text = as_text(value)
    try:
        number = float(text)  # "1.0" is how pandas writes an int column that has gaps
    except ValueError:
        number = math.nan
    if number in (0.0, 1.0):
        return int(number)
    raise _RowError("bad_label", f"label not 0/1: {text!r}")


def _labels(
    record: dict[str, Any], has_votes: bool, has_label: bool, required: bool = True
) -> tuple[int | None, float, int | None, int | None]:
    """(label, soft_label, defect_votes, total_votes) of one row, or _RowError; (None, nan, None, None) for a
    row without labels when they are not required."""
    votes_given = has_votes and not any(is_missing(record[c]) for c in VOTE_COLUMNS)
    label_given = has_label and not is_missing(record[LABEL_COLUMN])
    if not votes_given and not label_given and not required:
        return None, math.nan, None, None
    if not votes_given and not label_given:
        # Name exactly the empty cells that could have given a label (the votes, the label or both).
        missing = [c for c in VOTE_COLUMNS if has_votes and is_missing(record[c])]
        missing += [LABEL_COLUMN] if has_label else []
        raise _RowError("missing_value", f"missing value in required column(s) {', '.join(missing)}")
    defect_votes = total_votes = None
    if votes_given:
        defect_votes = _parse_count("defect_votes", record["defect_votes"])
        total_votes = _parse_count("total_votes", record["total_votes"])
        if total_votes == 0:
            raise _RowError("bad_votes", "votes out of range: total_votes=0")
        if defect_votes > total_votes:
            raise _RowError(
                "bad_votes", f"votes out of range: defect_votes={defect_votes} > total_votes={total_votes}"
            )
        soft = defect_votes / total_votes
    label = _parse_label(record[LABEL_COLUMN]) if label_given else int(soft >= 0.5)
    if not votes_given:
        soft = float(label)
    return label, soft, defect_votes, total_votes


def _image_kind(reason: str) -> str:
    for prefix, kind in (
        ("file does not exist", "missing_file"),
        ("not an image", "not_image"),
        ("truncated", "truncated"),
        ("too small", "too_small"),
        ("too large", "too_large"),
    ):
        if reason.startswith(prefix):
            return kind
    return "undecodable"


def _pixel_hash(image: Any) -> str:
    digest = hashlib.sha256(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def guard_table(
    frame: pd.DataFrame,
    root: str | Path,
    *,
    source: str = "",
    min_side: int = 256,
    check_images: bool = True,
    require_labels: bool = True,
) -> tuple[pd.DataFrame, GuardReport]:
    """Validate and normalise a raw label table (see format.py); returns the kept rows and the report.

    Kept rows get: ``row`` (1-based source row), ``image`` (as written), ``image_path`` (absolute),
    ``prompt_id``/``system``/``prompt``/``defect`` as text (``prompt``/``defect`` "" when absent),
    ``label`` (int), ``soft_label`` (float in [0, 1]), ``defect_votes``/``total_votes`` (nullable ints, only when
    the table has votes), ``split`` (only when the table has one) and, with ``check_images``, ``image_sha256``
    (of the file bytes) and ``pixel_sha256`` (of the decoded pixels). Other columns are passed through.

    With ``require_labels=False`` a row without label/votes is kept: ``label`` is then a nullable Int64 and
    ``soft_label`` NaN for it (a table without any label column gives all-missing labels).

    With ``check_images=False`` only the file's existence is checked (no decoding, no duplicate-content check).
    """
    root = Path(root).resolve()
    report = GuardReport(source=source or str(root), total=len(frame))
    columns = list(frame.columns)
    has_votes = all(c in columns for c in VOTE_COLUMNS)
    has_label = LABEL_COLUMN in columns
    kept: list[dict[str, Any]] = []
    first_row_of_path: dict[str, int] = {}
    # pixel hash -> (image, row, system, prompt_id) of every kept row with those pixels
    rows_of_pixels: dict[str, list[tuple[str, int, str, str]]] = {}

    for index, record in enumerate(frame.to_dict(orient="records")):
        row = index + 1
        image_cell = as_text(record.get("image"))
        try:
            missing = [c for c in REQUIRED_COLUMNS if is_missing(record[c])]
            if missing:
                raise _RowError("missing_value", f"missing value in required column(s) {', '.join(missing)}")
            label, soft, defect_votes, total_votes = _labels(record, has_votes, has_label, require_labels)

            path = os.path.normpath(root / image_cell)
            if path in first_row_of_path:
                raise _RowError(
                    "duplicate_row",
                    f"duplicate row for {image_cell} (first at row {first_row_of_path[path]})",
                )
            first_row_of_path[path] = row

            if not os.path.isfile(path):
                what = " (a directory)" if os.path.isdir(path) else ""
                raise _RowError("missing_file", f"image file missing: {path}{what}")
            sha256 = pixels = None
            if check_images:
                try:
                    loaded = load_image(path, min_side=min_side, name=image_cell)
                except ImageError as exc:
                    raise _RowError(_image_kind(exc.reason), exc.reason) from None
                pixels = _pixel_hash(loaded.image)
                system, prompt_id = as_text(record["system"]), as_text(record["prompt_id"])
                same = rows_of_pixels.get(pixels, [])
                for other, other_row, other_system, other_prompt in same:
                    if (other_system, other_prompt) == (system, prompt_id):
                        raise _RowError("duplicate_image", f"duplicate of {other} (row {other_row})")
                if same:
                    other, other_row, other_system, other_prompt = same[0]
                    note = (
                        f"same pixels as {other} (row {other_row}, system {other_system}, prompt "
                        f"{other_prompt}): kept, scored once"
                    )
                    report.notes.append(NotedRow(row=row, image=image_cell, kind="shared_image", note=note))
                rows_of_pixels.setdefault(pixels, []).append((image_cell, row, system, prompt_id))
                sha256 = loaded.sha256
        except _RowError as err:
            report.excluded.append(ExcludedRow(row=row, image=image_cell, kind=err.kind, reason=err.reason))
            continue

        out = dict(record)
        out.update(
            row=row,
            image=image_cell,
            image_path=path,
            prompt_id=as_text(record["prompt_id"]),
            system=as_text(record["system"]),
            label=label,
            soft_label=float(soft),
        )
        for column in OPTIONAL_COLUMNS:
            if column in columns or column != "split":
                out[column] = as_text(record.get(column))
        if has_votes:
            out["defect_votes"], out["total_votes"] = defect_votes, total_votes
        if sha256 is not None:
            out["image_sha256"] = sha256
            out["pixel_sha256"] = pixels
        kept.append(out)

    frame = _to_frame(
        kept, columns, has_votes, "split" in columns, check_images, labels_optional=not require_labels
    )
    return frame, report


def _to_frame(
    kept: list[dict[str, Any]],
    columns: list[str],
    has_votes: bool,
    has_split: bool,
    check_images: bool,
    *,
    labels_optional: bool = False,
) -> pd.DataFrame:
    # A fixed column order (known columns first) so csv/jsonl/parquet inputs give identical frames.
    lead = ["row", "image", "image_path", "prompt_id", "system", "label", "soft_label", "prompt", "defect"]
    if has_votes:
        lead += list(VOTE_COLUMNS)
    if has_split:
        lead.append("split")
    if check_images:
        lead += ["image_sha256", "pixel_sha256"]
    rest = [c for c in columns if c not in lead]
    frame = pd.DataFrame(kept, columns=lead + rest)
    label_type = "Int64" if labels_optional else "int64"  # nullable: label-free rows have none
    frame = frame.astype({"row": "int64", "label": label_type, "soft_label": "float64"})
    if has_votes:
        frame = frame.astype({c: "Int64" for c in VOTE_COLUMNS})
    for column in ("image", "image_path", "prompt_id", "system", "prompt", "defect"):
        frame[column] = frame[column].astype(str)
    return frame
