"""Resumable per-item results: one append-only file, one record per judged item, written as each item finishes.

`python -m vlm_judge.score` keeps its predictions CSV in one (the file users read is the store itself) and the eval
harness keeps one JSONL file per judge in ``OUTPUT/cache/``. What both rely on:

- every record is flushed to the OS as soon as it is appended, so a crash or SIGKILL loses only the items in flight;
- a rerun asks ``done(key)`` what is left: items without a record, and failed items when it retries failures
  (the scorer always does; eval with ``--retry-errors``);
- a line cut short by a kill is skipped on load (counted in ``corrupt_lines``), and when a key occurs twice the
  last record wins;
- ``discard(keys)`` rewrites the file atomically without those keys' records and without torn lines, so that
  after a retry the file again holds one record per item (what a reader of the CSV expects).

Two formats: JSON lines (any fields; the key under ``"key"``) or, given ``columns``, a CSV with that header row,
the key in one of its columns and every value read back as text. A CSV written by an older version, whose header
is a leading part of ``columns`` (columns added at the end since), is read and rewritten with the new header.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class ResultStoreError(ValueError):
    """The file exists but is not a store of this shape (another CSV header, not a CSV); the message names it."""


def succeeded(record: dict[str, Any]) -> bool:
    """Whether a record holds a usable score: a p_defect in [0, 1] (number or text) and no error."""
    if record.get("error"):
        return False
    try:
        p_defect = float(record.get("p_defect"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return math.isfinite(p_defect) and 0.0 <= p_defect <= 1.0


class ResultStore:
    """Append-only per-item results file; safe to append to from several threads."""

    def __init__(self, path: str | Path, *, columns: Sequence[str] | None = None, key: str = "key"):
        self.path = Path(path)
        self.columns = list(columns) if columns is not None else None
        self.key = key
        if self.columns is not None and key not in self.columns:
            raise ValueError(f"key column {key!r} is not one of {self.columns}")
        self.records: dict[str, dict[str, Any]] = {}
        self.corrupt_lines = 0
        self._tidy = True  # one well-formed record per key, and the file ends with a newline
        self._lock = threading.Lock()
        self._handle: Any = None
        self._outdated_header = False
        self._load()
        if self._outdated_header:
            self._tidy = False
            self.discard([])

    # ------------------------------------------------------------------ reading

    def _load(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, newline="", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        n_records = 0
        for record in self._parse(text):
            if record is None:
                self.corrupt_lines += 1  # a line cut short by a kill; its item is simply done again
                continue
            n_records += 1
            self.records[record[self.key]] = record
        self._tidy = not self.corrupt_lines and n_records == len(self.records) and text.endswith("\n")

    def _parse(self, text: str) -> Iterable[dict[str, Any] | None]:
        if self.columns is None:
            for line in text.split("\n"):  # not splitlines(): JSON text may hold U+2028 and friends unescaped
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    yield None
                    continue
                ok = isinstance(record, dict) and isinstance(record.get(self.key), str)
                yield record if ok else None
            return
        try:
            rows = list(csv.reader(io.StringIO(text)))
        except csv.Error as exc:
            raise ResultStoreError(f"{self.path} is not a readable CSV ({exc})") from None
        header = rows[0]
        if header != self.columns[: len(header)] or self.key not in header:
            raise ResultStoreError(f"{self.path} exists with columns {header}, not {self.columns}")
        if len(header) < len(self.columns):
            self._outdated_header = True  # a file of an older version: rewritten with the new columns on load
        for row in rows[1:]:
            record = {column: "" for column in self.columns} | dict(zip(header, row, strict=False))
            yield record if len(row) == len(header) and record[self.key] else None

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def done(self, key: str, *, retry_failed: bool = False) -> bool:
        """Whether ``key`` needs no more work: it has a record, and (with ``retry_failed``) a successful one."""
        record = self.records.get(key)
        return record is not None and (not retry_failed or succeeded(record))

    # ------------------------------------------------------------------ writing

    def _write(self, handle: Any, record: dict[str, Any]) -> None:
        if self.columns is None:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        else:
            csv.DictWriter(handle, self.columns).writerow(record)  # None is written as an empty field

    def append(self, key: str, record: dict[str, Any]) -> None:
        """Write one item's record and flush it to the OS (it survives a SIGKILL of this process)."""
        record = {self.key: key, **record}
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                size = self.path.stat().st_size if self.path.exists() else 0
                self._handle = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (kept open)
                if size and not _ends_with_newline(self.path):
                    self._handle.write("\n")  # end the fragment a kill left behind
                elif not size and self.columns is not None:
                    csv.writer(self._handle).writerow(self.columns)
            self._write(self._handle, record)
            self._handle.flush()
            if key in self.records:
                self._tidy = False
            self.records[key] = record

    def discard(self, keys: Iterable[str]) -> None:
        """Drop the records of ``keys`` (items about to be done again) and any torn lines: one atomic rewrite
        (a kill leaves the old file or the new one), only when there is something to drop."""
        with self._lock:
            drop = set(keys) & self.records.keys()
            if self._tidy and not drop:
                return
            self._close_handle()
            for key in drop:
                del self.records[key]
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                if self.columns is not None:
                    csv.writer(handle).writerow(self.columns)
                for record in self.records.values():
                    self._write(handle, record)
            os.replace(tmp, self.path)
            self.corrupt_lines = 0
            self._tidy = True

    def _close_handle(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self) -> None:
        with self._lock:
            self._close_handle()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"
