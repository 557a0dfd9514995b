"""The judge as the SbS metric: compare generator versions on the same prompts, no assessors needed.

    python -m eval.sbs --dataset DIR --judge baselines/finetuned.yaml --output reports/NAME \\
        [--systems A B ...] [--baseline A] [--threshold T] [--judge-metadata DIR]
        [--alpha 0.05 --correction holm --bootstrap 1000 --seed 0]

Input: a canonical dataset whose label/vote columns are optional, or DIR/<system>/<prompt_id>.<ext>
(vlm_judge.data.load_generations, the same quality guard). Two systems that drew the same picture are both kept
and the picture is judged once. Every image goes through the same scorer as eval.compare (eval.scoring.score_judge:
the JudgeClient from the judge config, the per-item JSONL cache in OUTPUT/cache/<judge>.jsonl or --cache-dir),
so a killed run resumes and an image that this judge config scored already -- in eval.compare or eval.sbs, with
the same cache folder -- is not queried again.

Per pair of systems (A = --baseline when given), over their shared prompts: mean p_defect and defect rate at the
threshold, per-prompt wins/ties/losses, the paired test of eval.sbs (Wilcoxon signed-rank, the same side_tests
as eval.compare's SbS) with the multiple-comparison correction, a bootstrap CI of the mean difference, the
verdict ("A better" / "B better" / "no significant difference"), the prompts needed for 80 % power and the
minimum detectable effect; when the table has assessors' labels, their verdict beside the judge's. With
--baseline, the score drift (eval.drift) of every other system against it.

Threshold for defect rates: the validation threshold in the judge's judge_metadata.json (--judge-metadata, else
the served model's folder when the server names a local one) when it has one, else --threshold (default 0.5).

Output: sbs.md, sbs.json, scores.csv (image, system, prompt_id, p_defect, error), distribution.png,
differences.png. Exit status: 0 report written, 2 unusable input (the message names it; what was scored stays
in the cache), 130 interrupted.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from . import sbs as S
from .compare import run_reporting_errors
from .drift import DriftInputError, drift_report
from .judges import JudgeConfigError, ResolvedJudge, SkippedJudge, load_judge_config, resolve_judge
from .scoring import score_judge

# Guard exclusions that mean an image could not be read: a bad input, not a data-quality remark.
IMAGE_PROBLEMS = ("missing_file", "not_image", "truncated", "undecodable", "too_small", "too_large")
METADATA_FILE = "judge_metadata.json"
METADATA_THRESHOLD_KEYS = ("validation_threshold", "threshold_val", "eval_threshold_val")


class SbsInputError(ValueError):
    """The SbS cannot run on this input; the message names the input and the problem."""


# ---------------------------------------------------------------------------------------------- input


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


def _served_model_dir(judge: ResolvedJudge) -> Path | None:
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


def metadata_threshold(metadata: dict[str, Any]) -> float | None:
    """The validation threshold a judge_metadata.json carries (top level or under ``metrics``), if any."""
    for place in (metadata, metadata.get("metrics") or {}):
        for key in METADATA_THRESHOLD_KEYS:
            value = place.get(key) if isinstance(place, dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
                return float(value)
    return None


def choose_threshold(
    judge: ResolvedJudge, metadata: str | None, threshold: float | None
) -> tuple[float, str]:
    """(threshold, where it came from): judge_metadata.json's validation threshold, else --threshold, else 0.5."""
    path = Path(metadata) if metadata else _served_model_dir(judge)
    if path is not None and path.is_dir():
        path = path / METADATA_FILE
    if metadata and (path is None or not path.is_file()):
        raise SbsInputError(f"--judge-metadata {metadata}: no {METADATA_FILE} there")
    if path is not None and path.is_file():
        try:
            value = metadata_threshold(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise SbsInputError(f"{path}: cannot be read as JSON ({exc})") from None
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
    judge: ResolvedJudge, frame: pd.DataFrame, cache_dir: Path, *, retry_errors: bool, progress: bool
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


# ---------------------------------------------------------------------------------------------- analysis


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def _system_summary(scored: pd.DataFrame, system: str, threshold: float) -> dict[str, Any]:
    rows = scored[scored["system"] == system]
    p = rows["p_defect"].dropna()
    return {
        "n_images": int(len(rows)),
        "n_prompts": int(rows["prompt_id"].nunique()),
        "n_scored": int(len(p)),
        "n_failed": int(len(rows) - len(p)),
        "mean_p_defect": _mean(p),
        "defect_rate": _mean((p >= threshold).astype(float)),
    }


def _test_row(test: S.PairTest, a: str, b: str) -> dict[str, Any]:
    verdict = S.verdict(test)
    winner = {"A better": a, "B better": b}.get(verdict)
    return {
        "n": test.n,
        "mean_diff": test.mean_diff,
        "p_value": test.p_value,
        "significant": test.significant,
        "verdict": verdict,
        "better": winner,
    }


def analyse(
    scored: pd.DataFrame,
    systems: list[str],
    pairs: list[tuple[str, str]],
    *,
    threshold: float,
    alpha: float,
    correction: str,
    n_boot: int,
    seed: int,
    baseline: str | None,
) -> dict[str, Any]:
    """Every number of the report: per system, per pair (judge and, with labels, assessors) and drift."""
    has_labels = "soft_label" in scored.columns and scored["soft_label"].notna().any()
    judge_tests = S.side_tests(scored, "p_defect", pairs, alpha=alpha, correction=correction)
    assessor_tests = (
        S.side_tests(scored, "soft_label", pairs, alpha=alpha, correction=correction) if has_labels else None
    )
    # Planning numbers at the level a pair is actually tested at: Holm's strictest step is alpha / m.
    plan_alpha = alpha / len(pairs) if correction == "holm" else alpha
    out_pairs = []
    for index, (a, b) in enumerate(pairs):
        diffs = S.pair_differences(scored, "p_defect", a, b)
        d = diffs.to_numpy()
        shared = scored[scored["prompt_id"].isin(diffs.index) & scored["p_defect"].notna()]
        p_a = shared.loc[shared["system"] == a, "p_defect"]
        p_b = shared.loc[shared["system"] == b, "p_defect"]
        row: dict[str, Any] = {
            "system_a": a,
            "system_b": b,
            "n_prompts": int(d.size),
            "mean_p_defect_a": _mean(p_a),
            "mean_p_defect_b": _mean(p_b),
            "defect_rate_a": _mean((p_a >= threshold).astype(float)),
            "defect_rate_b": _mean((p_b >= threshold).astype(float)),
            **S.wins_ties_losses(d),
            "mean_diff_ci": S.bootstrap_mean_ci(d, n_boot, seed),
            "judge": _test_row(judge_tests[index], a, b),
            "prompts_for_80_power": S.prompts_for_power(d, alpha=plan_alpha),
            "minimum_detectable_effect": S.minimum_detectable_effect(d, alpha=plan_alpha),
        }
        if assessor_tests is not None:
            row["assessors"] = _test_row(assessor_tests[index], a, b)
            row["assessors_agree"] = row["judge"]["verdict"] == row["assessors"]["verdict"]
        out_pairs.append(row)
    drift: dict[str, Any] = {"baseline": baseline, "systems": {}}
    if baseline is not None:
        reference = scored.loc[scored["system"] == baseline, "p_defect"].to_numpy(dtype=float)
        for system in systems:
            if system == baseline:
                continue
            current = scored.loc[scored["system"] == system, "p_defect"].to_numpy(dtype=float)
            try:
                drift["systems"][system] = drift_report(reference, current)
            except DriftInputError as exc:
                drift["systems"][system] = {"error": str(exc)}
    return {
        "has_labels": bool(has_labels),
        "systems": {s: _system_summary(scored, s, threshold) for s in systems},
        "pairs": out_pairs,
        "drift": drift,
    }


# ---------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eval.sbs",
        description="Compare generator versions side by side with a judge: verdicts, power, drift.",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="canonical dataset (labels optional) or DIR/<system>/<prompt_id>.<ext>",
    )
    parser.add_argument("--judge", required=True, help="judge config (baselines/*.yaml)")
    parser.add_argument("--output", required=True, help="report folder, e.g. reports/NAME")
    parser.add_argument("--systems", nargs="+", default=None, help="systems to compare (default: all)")
    parser.add_argument(
        "--baseline", default=None, help="system A of its pairs; drift is reported against it"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="defect-rate threshold when the judge's judge_metadata.json has none (default 0.5)",
    )
    parser.add_argument(
        "--judge-metadata", default=None, help="judge_metadata.json or the judge's model folder"
    )
    parser.add_argument("--alpha", type=float, default=S.ALPHA, help="significance level (default 0.05)")
    parser.add_argument(
        "--correction", default="holm", choices=S.CORRECTIONS, help="over pairs (default holm)"
    )
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap replicates of the CI (0: none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--min-side", type=int, default=256, help="data guard: smallest image side in px")
    parser.add_argument(
        "--cache-dir", default=None, help="results cache (default OUTPUT/cache; share with eval.compare)"
    )
    parser.add_argument(
        "--retry-errors", action="store_true", help="re-query items whose cached result is an error"
    )
    parser.add_argument("--skip-bad-images", action="store_true", help="compare without unreadable images")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace, argv: list[str] | None = None) -> dict[str, Path]:
    from .sbs_report import write_sbs_report

    if not 0 < args.alpha < 1:
        raise SbsInputError("--alpha must be in (0, 1)")
    if args.bootstrap < 0:
        raise SbsInputError("--bootstrap must be >= 0")
    if args.threshold is not None and not 0 <= args.threshold <= 1:
        raise SbsInputError("--threshold must be in [0, 1]")
    config = load_judge_config(args.judge)
    frame, guard = load_items(args.dataset, min_side=args.min_side, skip_bad_images=args.skip_bad_images)
    systems = select_systems(frame, args.systems, args.baseline, guard.source)
    pairs = system_pairs(systems, frame, guard.source)
    frame = frame[frame["system"].isin(systems)].reset_index(drop=True)

    judge = resolve_judge(config)
    if isinstance(judge, SkippedJudge):
        raise SbsInputError(
            f"judge {config.name} ({config.source}): {judge.reason.removeprefix('skipped: ')}"
        )
    output = Path(args.output)
    cache_dir = Path(args.cache_dir) if args.cache_dir else output / "cache"
    threshold, threshold_source = choose_threshold(judge, args.judge_metadata, args.threshold)
    scored = score_items(
        judge, frame, cache_dir, retry_errors=args.retry_errors, progress=not args.no_progress
    )

    analysis = analyse(
        scored,
        systems,
        pairs,
        threshold=threshold,
        alpha=args.alpha,
        correction=args.correction,
        n_boot=args.bootstrap,
        seed=args.seed,
        baseline=args.baseline,
    )
    results = {
        "generated_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": "python -m eval.sbs " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "dataset": {
            "path": str(args.dataset),
            "guard": guard.summary(),
            "excluded": [vars(e) for e in guard.excluded],
            "shared_images": [vars(n) for n in guard.notes],
            "n_images": int(len(scored)),
            "n_pictures_judged": int(scored["pixel_sha256"].nunique()),
            "n_prompts": int(scored["prompt_id"].nunique()),
            "systems": systems,
        },
        "judge": judge.describe(),
        "settings": {
            "threshold": threshold,
            "threshold_source": threshold_source,
            "alpha": args.alpha,
            "correction": args.correction,
            "test": S.TEST_NAME,
            "bootstrap": args.bootstrap,
            "seed": args.seed,
            "ci": "95 % percentile bootstrap over prompts of the mean per-prompt difference A - B",
            "power": S.POWER,
            "power_method": S.POWER_METHOD,
            "mde_method": S.MDE_METHOD,
            "baseline": args.baseline,
            "cache_dir": str(cache_dir),
            "n_cached": int(scored.drop_duplicates("pixel_sha256")["cached"].sum()),
        },
        **analysis,
    }
    return write_sbs_report(results, scored, output)


def main(argv: list[str] | None = None) -> int:
    from vlm_judge.data import DataFormatError
    from vlm_judge.protocol import ProtocolError

    args = build_parser().parse_args(argv)
    input_errors = (SbsInputError, JudgeConfigError, DataFormatError, ProtocolError, S.SbsError)
    return run_reporting_errors(run, args, argv, input_errors)


if __name__ == "__main__":
    sys.exit(main())
