"""Per-item results cache: one JSONL file per judge, one line per judged image, appended as each result lands.

Key = sha256 of the image file's bytes + hash of the judge's result-relevant config + prompt version, so
  - a run killed at any point resumes where it stopped (every finished item is on disk, flushed line by line);
  - a judge that finished is not queried again (all its keys are present);
  - changing the model, the prompt (text or version), top_logprobs or extra_body re-queries everything, while
    renaming or moving an image file does not.
A line cut short by a kill is skipped on load (counted in ``corrupt_lines``) and the next append starts a fresh
line. When a key occurs twice (a failed item re-queried with --retry-errors), the last line wins.
Failed items are cached too (their error text): a rerun does not hammer an endpoint with items that failed
already, unless asked to (``--retry-errors``).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any


def cache_key(image_sha256: str, judge_hash: str, prompt_version: str) -> str:
    return hashlib.sha256(f"{image_sha256}\x00{judge_hash}\x00{prompt_version}".encode()).hexdigest()[:32]


class ResultCache:
    """Append-only JSONL cache of one judge's per-item results; safe to append to from several threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self.corrupt_lines = 0
        self._lock = threading.Lock()
        self._handle: Any = None
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    self.corrupt_lines += 1  # a line cut short by a kill; its item is simply queried again
                    continue
                if isinstance(record, dict) and isinstance(record.get("key"), str):
                    self.records[record["key"]] = record
                else:
                    self.corrupt_lines += 1

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def append(self, key: str, record: dict[str, Any]) -> None:
        """Write one result line and flush it to the OS (survives SIGKILL of this process)."""
        line = {"key": key, **record, "cached_at": time.time()}
        text = json.dumps(line, ensure_ascii=False)
        with self._lock:
            if self._handle is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                needs_newline = (
                    self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
                )
                self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (kept open across appends)
                if needs_newline:
                    self._handle.write("\n")  # end the fragment a kill left behind
            self._handle.write(text + "\n")
            self._handle.flush()
            self.records[key] = line

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1) == b"\n"
