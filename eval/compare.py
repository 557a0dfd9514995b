"""Compare defect judges on one canonical dataset: one harness for every judge, one report.

    python -m eval.compare --dataset data/synthetic \\
        --judges baselines/finetuned.yaml baselines/base-tiny.yaml baselines/gpt-5.1.yaml \\
        --output reports/NAME [--split test --limit N --bootstrap 1000 --seed 0]

Every judge goes through the same path: the same guarded rows of the dataset (vlm_judge.data), the same image
files (the client loads them with vlm_judge.images), the same vlm_judge.client.JudgeClient (its retries,
backoff, timeouts and concurrency come from the judge config, nothing is re-implemented here). Per-item
results are appended to ``OUTPUT/cache/<judge>.jsonl`` as they arrive (eval.scoring): a killed run resumes
where it stopped and a finished judge is not queried again. Judges without endpoint/key, or whose endpoint
does not answer, are listed as skipped with the reason.

Scored: the ``--split`` items (default test) plus the validation split, on which the '@val' threshold is chosen
(maximising accuracy). Output: report.md, metrics.json, predictions.csv (one row per item and judge), PNGs.
Exit status: 0 when the report is written (even if every judge was skipped), 2 on unusable input.
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vlm_judge import metrics as M
from vlm_judge.judges import JudgeSpec, JudgeSpecError, JudgeUnavailable
from vlm_judge.metrics.confidence import evaluate_scores

from .report import definitions, write_report
from .sbs_stats import ALPHA, CORRECTIONS, SbsError, sbs_report
from .scoring import score_judge

SPLIT_CHOICES = ("test", "validation", "train", "all")


class CompareError(ValueError):
    """The comparison cannot run as asked (empty split, no judges, ...); the message says what to change."""


# ---------------------------------------------------------------------------------------------- data


def load_items(dataset: str | Path, *, min_side: int, seed: int) -> tuple[pd.DataFrame, str]:
    """Guarded rows with a split column (the table's own, else prompt-grouped by ``seed``) and the guard line."""
    from vlm_judge.data import load_assessor_logs, split_by_prompt

    frame, report = load_assessor_logs(dataset, min_side=min_side)
    if frame.empty:
        raise CompareError(f"{report.source}: no usable rows ({report.summary()})")
    # The loader gives text ids, 0/1 labels, soft labels and each file's sha256 (the cache key's image part).
    return split_by_prompt(frame, seed=seed).reset_index(drop=True), report.summary()


def limit_prompts(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """At most ``limit`` images, taken as whole prompts (so SbS still sees every system of a prompt), in an
    order fixed by a hash of (seed, prompt_id): the same subset on every run and every judge."""
    if not limit or len(frame) <= limit:
        return frame
    sizes = frame.groupby("prompt_id").size()
    order = sorted(sizes.index, key=lambda p: hashlib.sha256(f"{seed}\x00{p}".encode()).hexdigest())
    chosen, total = [], 0
    for prompt_id in order:
        if total and total + sizes[prompt_id] > limit:
            break
        chosen.append(prompt_id)
        total += sizes[prompt_id]
    return frame[frame["prompt_id"].isin(chosen)]


# ---------------------------------------------------------------------------------------------- metrics


def judge_summary(
    preds: pd.DataFrame,
    *,
    split: str,
    n_boot: int,
    seed: int,
    alpha: float,
    correction: str,
) -> dict[str, Any]:
    """Quality, latency, failures and SbS of one judge from its rows of the predictions table."""
    evaluated = preds[preds["evaluated"]]
    scored = evaluated[evaluated["p_defect"].notna()]
    errors = Counter(evaluated.loc[evaluated["p_defect"].isna(), "error_kind"].fillna("unknown error"))
    failures = {
        "n_items": int(len(evaluated)),
        "n_scored": int(len(scored)),
        "n_failed": int(len(evaluated) - len(scored)),
        "failure_rate": float((len(evaluated) - len(scored)) / len(evaluated))
        if len(evaluated)
        else float("nan"),
        "n_cached": int(evaluated["cached"].sum()),
        "errors": dict(errors.most_common()),
    }
    out: dict[str, Any] = {"failures": failures, "latency": M.latency_stats(scored["latency_ms"])}
    if scored.empty:
        return out

    validation = preds[(preds["split"] == "validation") & preds["p_defect"].notna()]
    if validation.empty:
        threshold, note = 0.5, "not chosen: no scored validation items, 0.5 used"
    else:
        threshold = M.choose_threshold(validation["label"].to_numpy(), validation["p_defect"].to_numpy())
        note = f"{threshold:.4f}, chosen on {len(validation)} validation items to maximise accuracy"
        if split in ("validation", "all"):
            note += "; in-sample: the evaluated items include the validation split"
    quality = evaluate_scores(
        scored["label"].to_numpy(),
        scored["p_defect"].to_numpy(),
        scored["soft_label"].to_numpy(dtype=float),
        defects=scored["defect"].to_numpy() if "defect" in scored.columns else None,
        val_threshold=threshold,
        groups=scored["prompt_id"].to_numpy(),
        n_boot=n_boot,
        seed=seed,
    )
    quality["threshold_note"] = note
    out["quality"] = quality
    out["sbs"] = sbs_report(
        evaluated, "p_defect", alpha=alpha, correction=correction, n_boot=n_boot, seed=seed
    )
    return out


# ---------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eval.compare",
        description="Score a canonical dataset with several judges and write a comparison report.",
    )
    parser.add_argument(
        "--dataset", required=True, help="canonical dataset folder (images/ + labels.csv|jsonl|parquet)"
    )
    parser.add_argument("--judges", required=True, nargs="+", help="judge config files (baselines/*.yaml)")
    parser.add_argument("--output", required=True, help="report folder, e.g. reports/NAME")
    parser.add_argument(
        "--split", default="test", choices=SPLIT_CHOICES, help="split to evaluate (default test)"
    )
    parser.add_argument("--limit", type=int, default=None, help="at most N images per split, whole prompts")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates for CIs (0: none)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of splits (if the table has none), --limit, bootstrap"
    )
    parser.add_argument("--alpha", type=float, default=ALPHA, help="SbS significance level (default 0.05)")
    parser.add_argument("--sbs-correction", default="none", choices=CORRECTIONS, help="over system pairs")
    parser.add_argument("--min-side", type=int, default=256, help="data guard: smallest image side in px")
    parser.add_argument("--cache-dir", default=None, help="results cache folder (default OUTPUT/cache)")
    parser.add_argument(
        "--retry-errors", action="store_true", help="re-query items whose cached result is an error"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Path]:
    from vlm_judge.data import dataset_fingerprint

    if args.limit is not None and args.limit < 1:
        raise CompareError("--limit must be >= 1")
    if args.bootstrap < 0:
        raise CompareError("--bootstrap must be >= 0")
    if not 0 < args.alpha < 1:
        raise CompareError("--alpha must be in (0, 1)")
    configs = [JudgeSpec.from_yaml(path) for path in args.judges]  # all configs checked before any scoring
    names = Counter(c.name for c in configs)
    if any(n > 1 for n in names.values()):
        raise CompareError(
            f"judge names must be unique (repeated: {', '.join(k for k, n in names.items() if n > 1)})"
        )

    frame, guard = load_items(args.dataset, min_side=args.min_side, seed=args.seed)
    parts = []
    for name in ("train", "validation", "test"):
        part = frame[frame["split"] == name]
        if args.split in (name, "all"):
            parts.append(limit_prompts(part, args.limit, args.seed).assign(evaluated=True))
        elif name == "validation":
            parts.append(limit_prompts(part, args.limit, args.seed).assign(evaluated=False))
    items = pd.concat(parts).reset_index(drop=True)
    evaluated = items[items["evaluated"]]
    if evaluated.empty:
        raise CompareError(
            f"split {args.split!r} of {args.dataset} has no usable images; choose another --split"
        )

    # One request per distinct picture: rows of two systems that drew the same pixels share its score.
    images = items.drop_duplicates("pixel_sha256")[["image", "image_path", "image_sha256", "pixel_sha256"]]
    images = images.rename(columns={"image_sha256": "sha256"}).reset_index(drop=True)
    output = Path(args.output)
    cache_dir = Path(args.cache_dir) if args.cache_dir else output / "cache"

    judges: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    tables = []
    for config in configs:
        try:
            resolved = config.resolve()
        except JudgeUnavailable as exc:
            reason = f"skipped: {exc.reason}"
            skipped.append({"name": str(config.name), "source": str(config.source), "reason": reason})
            print(f"{config.name}: {reason}", file=sys.stderr)
            continue
        results, reason = score_judge(
            resolved, images, cache_dir, retry_errors=args.retry_errors, progress=not args.no_progress
        )
        if results is None:
            skipped.append({"name": config.name, "source": config.source, "reason": reason or "skipped"})
            print(f"{config.name}: {reason}", file=sys.stderr)
            continue
        results = results.drop(columns="image_path").assign(pixel_sha256=images["pixel_sha256"].to_numpy())
        preds = items.merge(results, on="pixel_sha256", how="left", validate="many_to_one").assign(
            judge=config.name
        )
        tables.append(preds)
        judges[config.name] = {
            "judge": resolved.describe(),
            **judge_summary(
                preds,
                split=args.split,
                n_boot=args.bootstrap,
                seed=args.seed,
                alpha=args.alpha,
                correction=args.sbs_correction,
            ),
        }

    columns = ["judge", "image", "prompt_id", "system", "split", "evaluated", "label", "soft_label"]
    columns += [c for c in ("defect",) if c in items.columns]
    columns += [
        "image_sha256",
        "p_defect",
        "pred@0.5",
        "pred@val",
        "error",
        "latency_ms",
        "attempts",
        "defects",
        "method",
        "cached",
    ]
    for table in tables:
        name = table["judge"].iloc[0]
        threshold = judges[name].get("quality", {}).get("threshold_val", 0.5)
        table["pred@0.5"] = np.where(
            table["p_defect"].notna(), (table["p_defect"] >= 0.5).astype(float), np.nan
        )
        table["pred@val"] = np.where(
            table["p_defect"].notna(), (table["p_defect"] >= threshold).astype(float), np.nan
        )
    predictions = (
        pd.concat(tables).reset_index(drop=True).reindex(columns=columns) if tables else pd.DataFrame(columns=columns)
    )

    results = {
        "name": output.name,
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "python -m eval.compare " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "dataset": {
            "path": str(args.dataset),
            "fingerprint": dataset_fingerprint(args.dataset),
            "guard": guard,
            "split": args.split,
            "limit": args.limit,
            "n_images": int(len(evaluated)),
            "n_defective": int(evaluated["label"].sum()),
            "n_prompts": int(evaluated["prompt_id"].nunique()),
            "n_systems": int(evaluated["system"].nunique()),
            "threshold_split": "validation",
            "n_threshold_images": int((items["split"] == "validation").sum()),
        },
        "settings": {
            "bootstrap": args.bootstrap,
            "seed": args.seed,
            "alpha": args.alpha,
            "sbs_correction": args.sbs_correction,
            "cache_dir": str(cache_dir),
        },
        "judges": judges,
        "skipped": skipped,
        "definitions": definitions(args.alpha, args.sbs_correction),
    }
    return write_report(results, predictions, output)


def main(argv: list[str] | None = None) -> int:
    from vlm_judge.data import DataFormatError
    from vlm_judge.protocol import ProtocolError

    args = build_parser().parse_args(argv)
    input_errors = (CompareError, JudgeSpecError, DataFormatError, ProtocolError, SbsError, M.MetricsError)
    return run_reporting_errors(run, args, argv, input_errors)


def run_reporting_errors(
    run_command: Any,
    args: argparse.Namespace,
    argv: list[str] | None,
    input_errors: tuple[type[Exception], ...],
) -> int:
    """The harness CLIs' exit protocol: 0 and the report's path; 2 and `error: ...` for bad input (no traceback);
    130 on Ctrl-C, finished items being in the per-item cache already."""
    try:
        paths = run_command(args, argv)
    except input_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. the output folder is a file or not writable
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished items are cached; rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"report: {paths['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
