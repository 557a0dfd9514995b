"""One judge over a set of pictures, through the per-item results cache: the scorer eval.compare and eval.sbs
share. The endpoint is probed once (vlm_judge.judges.probe) and the judge is built from its spec
(vlm_judge.judges.make_judge: the OpenAI-compatible client, or the in-process LocalJudge for `base_url: local`);
every result is appended to ``CACHE_DIR/<judge>.jsonl`` (a vlm_judge.results store) as it lands, with its error
text and kind.

The cache key is the sha256 of the image file's bytes + the hash of the judge's result-relevant config + the prompt
version, so a judge that finished is not queried again; changing the model, the prompt (text or version),
top_logprobs or extra_body re-queries everything, while renaming or moving an image file does not. Failed items are
cached too: a rerun does not hammer an endpoint with items that failed already, unless asked to (retry_errors)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from vlm_judge.judges import JudgeSpec
from vlm_judge.results import ResultStore


def cache_key(image_sha256: str, judge_hash: str, prompt_version: str) -> str:
    return hashlib.sha256(f"{image_sha256}\x00{judge_hash}\x00{prompt_version}".encode()).hexdigest()[:32]


def _record(result: Any, image: str, sha: str, judge: JudgeSpec, judge_hash: str) -> dict[str, Any]:
    return {
        "image": image,
        "image_sha256": sha,
        "judge": judge.name,
        "judge_hash": judge_hash,
        "prompt_version": judge.judge_prompt.version,
        "p_defect": None if result.p_defect is None else float(result.p_defect),
        "error": result.error,
        "error_kind": result.error_kind,
        "latency_ms": None if result.latency_ms is None else float(result.latency_ms),
        "defects": list(getattr(result, "defects", ()) or ()),
        "attempts": int(getattr(result, "attempts", 1) or 1),
        "method": getattr(result, "method", None),  # how p_defect was read (vlm_judge.judges.answers.METHODS)
    }


def score_judge(
    judge: JudgeSpec,
    images: pd.DataFrame,
    cache_dir: Path,
    *,
    retry_errors: bool = False,
    progress: bool = True,
    check: bool = True,
) -> tuple[pd.DataFrame | None, str | None]:
    """Scores of one judge for ``images`` (columns image, image_path, sha256), from the cache where present.

    Returns (per-image results, None) or (None, skip reason). Results are appended to the cache as each item
    finishes, so an interruption loses at most the items in flight."""
    from tqdm.auto import tqdm

    judge_hash = judge.config_hash()
    version = judge.judge_prompt.version
    keys = [cache_key(sha, judge_hash, version) for sha in images["sha256"]]
    with ResultStore(cache_dir / f"{judge.name}.jsonl") as cache:
        todo = [i for i, key in enumerate(keys) if not cache.done(key, retry_failed=retry_errors)]
        cached_before = len(keys) - len(todo)
        if todo:
            from vlm_judge.judges import EndpointError
            from vlm_judge.score import score_pending

            bar = tqdm(
                total=len(keys), initial=cached_before, desc=judge.name, unit="img", disable=not progress
            )
            pending = [(keys[i], images["image_path"].iloc[i], images["image"].iloc[i]) for i in todo]
            shas = {keys[i]: images["sha256"].iloc[i] for i in todo}

            def record(key: str, result: Any) -> dict[str, Any]:
                return _record(result, result.image, shas[key], judge, judge_hash)

            try:
                score_pending(judge, cache, pending, record, check=check, on_result=lambda _: bar.update(1))
            except EndpointError as exc:
                return None, f"skipped: {exc}"
            except Exception as exc:
                # The client returns errors per item; anything escaping it (its own argument checks, a model that
                # does not load, a failing store) ends this judge, not the run.
                reason = f"failed ({type(exc).__name__}: {exc}); finished items are cached, rerun to resume"
                return None, reason
            finally:
                bar.close()
        queried = set(todo)
        rows = []
        for i, key in enumerate(keys):
            record = cache.get(key) or {
                "error": "no result (the client returned none for this item)",
                "error_kind": "NoResult",
            }
            rows.append(
                {
                    "image_path": images["image_path"].iloc[i],
                    "p_defect": record.get("p_defect"),
                    "error": record.get("error"),
                    "error_kind": _error_kind(record),
                    "latency_ms": record.get("latency_ms"),
                    "attempts": record.get("attempts"),
                    "defects": "; ".join(record.get("defects") or []),
                    "method": record.get("method"),
                    "cached": i not in queried,
                }
            )
    out = pd.DataFrame(rows)
    out["p_defect"] = pd.to_numeric(out["p_defect"], errors="coerce")
    out["latency_ms"] = pd.to_numeric(out["latency_ms"], errors="coerce")
    return out, None


def _error_kind(record: dict[str, Any]) -> str | None:
    """The failure kind of a cached result (None when it scored). Lines cached before results carried
    ``error_kind`` have only the "Kind: message" text; their kind is its first clause."""
    if record.get("error") is None:
        return None
    kind = record.get("error_kind")
    if kind is None:
        text = str(record["error"])
        kind = text.split(":")[0][:80] if ":" in text else text[:80]
    return kind
