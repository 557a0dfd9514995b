"""Score drift: has the judge's score distribution moved between a reference run and the current one?

    python -m eval.drift --reference A.csv --current B.csv [--column p_defect] [--judge NAME] [--output drift.json]
    python -m eval.drift --reference scores.csv --current scores.csv --reference-system v1 --current-system v2

Inputs are any table with a score column: eval.sbs's scores.csv, eval.compare's predictions.csv (pick one judge
with ``--judge`` when it holds several), vlm_judge.score's preds.csv. ``--system`` keeps one generator system's rows
of both tables; ``--reference-system`` / ``--current-system`` pick a different one on each side (two systems of
the same scores.csv). Rows without a score (failed items) are
left out and counted.

Measures (``drift_report``):
  - **PSI** (population stability index) over ``BINS`` fixed equal-width bins of [0, 1] (p_defect is a
    probability; values outside the range fall into the end bins); empty bins count as ``PSI_FLOOR`` so one
    empty bin does not make PSI infinite. sum((cur - ref) * ln(cur / ref)) over the bins' shares.
  - **KS**: two-sample Kolmogorov-Smirnov test (scipy.stats.ks_2samp), statistic and p-value.
  - **Jensen-Shannon distance** (scipy.spatial.distance.jensenshannon, base 2: 0 same, 1 disjoint) between
    the two binned distributions.
  - **mean and quantile shifts** (current - reference) at the 10/25/50/75/90 % quantiles.

Alert rule: **PSI > 0.2 = drift** (the usual reading: < 0.1 stable, 0.1-0.2 moderate, > 0.2 significant
shift). KS is reported, not used for the alert: with thousands of scores it flags shifts too small to matter.
Exit status: 0 no drift, 3 drift (so a scheduled job can page someone), 2 unusable input.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

BINS = 10
PSI_FLOOR = 1e-4  # share given to an empty bin
PSI_ALERT = 0.2
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
EXIT_DRIFT = 3
EXIT_BAD_INPUT = 2
ALERT_RULE = f"drift when PSI > {PSI_ALERT} ({BINS} equal-width bins of [0, 1])"


class DriftInputError(ValueError):
    """An input that cannot be compared (missing file or column, too few scores); the message names it."""


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    inner = edges[1:-1]  # the outer edges are open: out-of-range values land in the end bins
    counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(edges) - 1)
    return counts / counts.sum()


def psi(reference: np.ndarray, current: np.ndarray, edges: np.ndarray) -> float:
    """Population stability index of ``current`` against ``reference`` over fixed bin ``edges``."""
    ref = np.maximum(_shares(reference, edges), PSI_FLOOR)
    cur = np.maximum(_shares(current, edges), PSI_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def drift_report(
    reference: np.ndarray,
    current: np.ndarray,
    *,
    bins: int = BINS,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> dict[str, Any]:
    """Every drift measure of ``current`` against ``reference`` and the alert (see the module docstring)."""
    ref = np.asarray(reference, dtype=float)
    cur = np.asarray(current, dtype=float)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size < 2 or cur.size < 2:
        raise DriftInputError(
            f"drift needs at least 2 scores on each side (reference {ref.size}, current {cur.size})"
        )
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    ks = stats.ks_2samp(ref, cur)
    value = psi(ref, cur, edges)
    ref_q = np.quantile(ref, QUANTILES)
    cur_q = np.quantile(cur, QUANTILES)
    return {
        "n_reference": int(ref.size),
        "n_current": int(cur.size),
        "psi": value,
        "ks_statistic": float(ks.statistic),
        "ks_p_value": float(ks.pvalue),
        "js_distance": float(distance.jensenshannon(_shares(ref, edges), _shares(cur, edges), base=2)),
        "mean_reference": float(ref.mean()),
        "mean_current": float(cur.mean()),
        "mean_shift": float(cur.mean() - ref.mean()),
        "quantile_shift": {
            f"q{round(q * 100)}": float(c - r) for q, r, c in zip(QUANTILES, ref_q, cur_q, strict=True)
        },
        "bins": bins,
        "range": list(value_range),
        "alert_rule": ALERT_RULE,
        "drift": bool(value > PSI_ALERT),
    }


def read_scores(
    path: str | Path, column: str = "p_defect", judge: str | None = None, system: str | None = None
) -> tuple[np.ndarray, int]:
    """(finite scores, rows without a score) of one table, optionally only one judge's and/or one system's rows;
    DriftInputError names the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise DriftInputError(f"{path}: file does not exist")
    try:
        table = pd.read_csv(path)
    except Exception as exc:  # pandas raises many types; any of them means the file is unusable
        raise DriftInputError(f"{path}: cannot be read as CSV ({type(exc).__name__}: {exc})") from None
    if column not in table.columns:
        raise DriftInputError(f"{path}: no column {column!r} (columns: {', '.join(map(str, table.columns))})")
    table = _select(table, path, "judge", judge, required=True)
    table = _select(table, path, "system", system, required=False)
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        raise DriftInputError(
            f"{path}: {finite.size} usable value(s) in column {column!r}; drift needs at least 2"
        )
    return finite, int(values.size - finite.size)


def _select(
    table: pd.DataFrame, path: Path, column: str, value: str | None, *, required: bool
) -> pd.DataFrame:
    """The rows whose ``column`` is ``value``. ``required`` (the judge): a table holding several values needs one
    named (several judges' scores never make one distribution), and a table without the column is one judge's.
    Otherwise (the system) several values are pooled, and naming one needs the column."""
    if value is None:
        if required and column in table.columns and table[column].dropna().nunique() > 1:
            names = ", ".join(sorted(table[column].dropna().astype(str).unique()))
            raise DriftInputError(f"{path}: scores of several {column}s ({names}); pick one with --{column}")
        return table
    if column not in table.columns:
        if required:  # a table without a judge column holds one judge's scores: --judge names it
            return table
        raise DriftInputError(f"{path}: no {column!r} column to select {column} {value!r} from")
    names = sorted(table[column].dropna().astype(str).unique())
    if value not in names:
        raise DriftInputError(f"{path}: no rows of {column} {value!r} ({column}s: {', '.join(names)})")
    return table[table[column].astype(str) == value]


def format_report(report: dict[str, Any]) -> str:
    """The few lines a person (or a pager) reads."""
    q = report["quantile_shift"]
    return "\n".join(
        [
            f"{'DRIFT' if report['drift'] else 'no drift'}: PSI {report['psi']:.3f} ({report['alert_rule']})",
            f"KS {report['ks_statistic']:.3f} (p={report['ks_p_value']:.3g}), Jensen-Shannon distance "
            f"{report['js_distance']:.3f}",
            f"mean {report['mean_reference']:.3f} -> {report['mean_current']:.3f} (shift {report['mean_shift']:+.3f}); "
            "quantile shifts " + ", ".join(f"{k} {v:+.3f}" for k, v in q.items()),
            f"n reference {report['n_reference']}, current {report['n_current']}",
        ]
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eval.drift",
        description="Compare two score distributions; exit 3 on drift (PSI > 0.2).",
    )
    parser.add_argument(
        "--reference", required=True, help="CSV of reference scores (scores.csv, predictions.csv, ...)"
    )
    parser.add_argument("--current", required=True, help="CSV of current scores")
    parser.add_argument("--column", default="p_defect", help="score column (default p_defect)")
    parser.add_argument("--judge", default=None, help="judge to take from a predictions.csv with several")
    parser.add_argument(
        "--system",
        default=None,
        help="generator system to take from both tables (e.g. eval.sbs's scores.csv); without it all rows count",
    )
    parser.add_argument(
        "--reference-system", default=None, help="system for the reference table only (overrides --system)"
    )
    parser.add_argument(
        "--current-system", default=None, help="system for the current table only (overrides --system)"
    )
    parser.add_argument("--bins", type=int, default=BINS, help=f"PSI/JS bins over [0, 1] (default {BINS})")
    parser.add_argument("--output", default=None, help="also write the report as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.bins < 2:
            raise DriftInputError("--bins must be >= 2")
        reference_system = args.reference_system or args.system
        current_system = args.current_system or args.system
        reference, ref_missing = read_scores(args.reference, args.column, args.judge, reference_system)
        current, cur_missing = read_scores(args.current, args.column, args.judge, current_system)
        report = drift_report(reference, current, bins=args.bins)
    except DriftInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    report.update(
        reference=str(args.reference),
        current=str(args.current),
        column=args.column,
        reference_system=reference_system,
        current_system=current_system,
        reference_rows_without_score=ref_missing,
        current_rows_without_score=cur_missing,
    )
    print(format_report(report))
    if args.output:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in report.items()}
        try:
            Path(args.output).write_text(json.dumps(clean, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write {args.output} ({exc.strerror or exc})", file=sys.stderr)
            return EXIT_BAD_INPUT
    return EXIT_DRIFT if report["drift"] else 0


if __name__ == "__main__":
    sys.exit(main())
