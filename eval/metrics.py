"""Pointwise metrics of a defect judge: one module, numpy implementations tested against scikit-learn.

Conventions (the report repeats them):

- ``y`` is the assessors' hard label (1 = defective), ``p`` the judge's ``p_defect``; a prediction is defective
  when ``p >= threshold``.
- Threshold-dependent metrics are given at 0.5 and at a threshold chosen on the *validation* split by
  **maximising accuracy** (seed 000 names accuracy as the target metric). Candidates are the midpoints between
  consecutive distinct validation scores plus the two extremes; ties go to the candidate closest to 0.5.
- PR-AUC is *average precision* (sklearn's step-wise sum, no interpolation: the trapezoid over a PR curve is
  optimistic).
- ECE: **15 equal-width bins** over ``p_defect`` in [0, 1] (last bin closed), the count-weighted mean of
  ``|mean(p) - mean(y)|`` per bin, i.e. calibration of P(defect) itself (the same quantity as the reliability
  diagram), not of max(p, 1 - p).
- RMSE is against the assessors' soft label (share of assessors who saw a defect); seed 000's bar is <= 0.1.
- 95 % CIs: percentile bootstrap over *prompts* when groups are given (images of one prompt share a scene, so
  resampling single images would understate the variance), else over items. The threshold is held fixed.

Why own numpy code instead of calling sklearn: the bootstrap evaluates ~12 metrics 1000 times per judge;
sklearn's input validation costs ~1 ms a call, the numpy versions ~20 us. tests/test_metrics.py checks each
against sklearn on fixed data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

ECE_BINS = 15
THRESHOLD_RULE = "maximises accuracy on the validation split (ties: closest to 0.5)"
CI_LEVEL = 0.95


class MetricsError(ValueError):
    """Inputs that metrics cannot be computed on (mismatched lengths, labels not 0/1, scores outside [0, 1])."""


# ---------------------------------------------------------------------------------------------- inputs


def _arrays(
    y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    y_arr = np.asarray(y, dtype=float).ravel()
    p_arr = np.asarray(p, dtype=float).ravel()
    if y_arr.shape != p_arr.shape:
        raise MetricsError(f"labels and scores differ in length ({y_arr.size} vs {p_arr.size})")
    if y_arr.size and not np.isin(y_arr, (0.0, 1.0)).all():
        raise MetricsError("labels must be 0 or 1")
    if p_arr.size and (not np.isfinite(p_arr).all() or p_arr.min() < 0 or p_arr.max() > 1):
        raise MetricsError("scores must be finite probabilities in [0, 1]")
    return y_arr.astype(np.int8), p_arr


# ---------------------------------------------------------------------------------------------- ranking


def roc_auc(y: Any, p: Any) -> float:
    """ROC-AUC as the Mann-Whitney statistic with tied scores counted 1/2 (equals sklearn's roc_auc_score).

    NaN when only one class is present (undefined, where sklearn raises)."""
    y, p = _arrays(y, p)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get their mean rank (scipy.stats.rankdata 'average', without the import cost)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Boundaries of runs of equal values.
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    run_id = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], values.size] - 1
    mean_rank = (first + last) / 2.0 + 1.0
    ranks = np.empty(values.size, dtype=float)
    ranks[order] = mean_rank[run_id]
    return ranks


def _counts_at_thresholds(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true positives, false positives) of ``p >= t`` for every distinct score t, highest first.

    Tied scores enter together: counts are taken at the last item of each run of equal scores."""
    order = np.argsort(-p, kind="mergesort")
    p_sorted, y_sorted = p[order], y[order]
    last_of_run = np.r_[p_sorted[1:] != p_sorted[:-1], True] if y.size else np.zeros(0, dtype=bool)
    tp = np.cumsum(y_sorted)[last_of_run]
    fp = np.arange(1, y.size + 1)[last_of_run] - tp
    return tp, fp


def average_precision(y: Any, p: Any) -> float:
    """PR-AUC as average precision: sum over distinct thresholds of (R_n - R_{n-1}) * P_n (sklearn's rule).

    NaN without positives."""
    y, p = _arrays(y, p)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    tp, fp = _counts_at_thresholds(y, p)
    recall_step = np.diff(np.r_[0.0, tp / n_pos])
    return float(np.sum(recall_step * tp / (tp + fp)))


def roc_curve_points(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, from (0, 0) to (1, 1); for plots."""
    y, p = _arrays(y, p)
    tp, fp = _counts_at_thresholds(y, p)
    n_pos, n_neg = max(int(y.sum()), 1), max(int(y.size - y.sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def pr_curve_points(y: Any, p: Any) -> tuple[np.ndarray, np.ndarray]:
    """(recall, precision) at every distinct threshold, starting at recall 0 with precision 1; for plots."""
    y, p = _arrays(y, p)
    tp, fp = _counts_at_thresholds(y, p)
    n_pos = max(int(y.sum()), 1)
    return np.r_[0.0, tp / n_pos], np.r_[1.0, tp / (tp + fp)]


# ---------------------------------------------------------------------------------------------- probabilities


def brier(y: Any, p: Any) -> float:
    y, p = _arrays(y, p)
    return float(np.mean((p - y) ** 2)) if y.size else math.nan


def rmse(p: Any, target: Any) -> float:
    """Root mean squared error of p_defect against a soft target in [0, 1] (the assessors' vote share)."""
    p_arr = np.asarray(p, dtype=float).ravel()
    t_arr = np.asarray(target, dtype=float).ravel()
    if p_arr.shape != t_arr.shape:
        raise MetricsError(f"scores and soft labels differ in length ({p_arr.size} vs {t_arr.size})")
    if not p_arr.size:
        return math.nan
    return float(np.sqrt(np.mean((p_arr - t_arr) ** 2)))


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    # Equal-width bins [k/n, (k+1)/n); p == 1 goes to the last bin.
    return np.minimum((p * n_bins).astype(int), n_bins - 1)


def reliability_curve(y: Any, p: Any, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin: edges, item count, mean p_defect and observed defect rate (NaN in empty bins)."""
    y, p = _arrays(y, p)
    idx = _bin_index(p, n_bins)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y.astype(float), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / count, np.nan)
        rate = np.where(count > 0, sum_y / count, np.nan)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {"lower": edges[:-1], "upper": edges[1:], "count": count, "mean_p": mean_p, "defect_rate": rate}


def expected_calibration_error(y: Any, p: Any, n_bins: int = ECE_BINS) -> float:
    """ECE with equal-width bins: sum over bins of (n_bin / n) * |mean(p) - mean(y)|."""
    y, p = _arrays(y, p)
    if not y.size:
        return math.nan
    idx = _bin_index(p, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    gap = np.abs(
        np.bincount(idx, weights=p, minlength=n_bins) - np.bincount(idx, weights=y, minlength=n_bins)
    )
    # sum_bins (n_b / n) * |sum_p/n_b - sum_y/n_b| = sum_bins |sum_p - sum_y| / n
    return float(gap[count > 0].sum() / y.size)


# ---------------------------------------------------------------------------------------------- threshold


def threshold_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and balanced accuracy of ``p >= threshold`` (zero division -> 0,
    as sklearn with zero_division=0). Balanced accuracy averages recall over the classes present in y."""
    y, p = _arrays(y, p)
    pred = (p >= threshold).astype(np.int8)
    tp = int(np.sum((pred == 1) & (y == 1)))
    fp = int(np.sum((pred == 1) & (y == 0)))
    fn = int(np.sum((pred == 0) & (y == 1)))
    tn = int(np.sum((pred == 0) & (y == 0)))
    n = y.size
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    per_class = [
        r for r, present in ((recall, tp + fn), (tn / (tn + fp) if tn + fp else 0.0, tn + fp)) if present
    ]
    return {
        "accuracy": (tp + tn) / n if n else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "balanced_accuracy": float(np.mean(per_class)) if per_class else math.nan,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def choose_threshold(y: Any, p: Any) -> float:
    """The threshold that maximises accuracy of ``p >= t`` on (y, p) -- meant for the validation split.

    Candidates: midpoints between consecutive distinct scores, plus 0 (all defective) and just above the
    largest score (all clean). Ties: the candidate closest to 0.5, so a flat optimum keeps the natural cut."""
    y, p = _arrays(y, p)
    if not y.size:
        raise MetricsError("cannot choose a threshold on an empty validation set")
    values = np.unique(p)
    candidates = np.r_[0.0, (values[1:] + values[:-1]) / 2.0, np.nextafter(values[-1], np.inf)]
    # Accuracy for every candidate at once: correct = #(y=1, p>=t) + #(y=0, p<t).
    pos_sorted = np.sort(p[y == 1])
    neg_sorted = np.sort(p[y == 0])
    tp = pos_sorted.size - np.searchsorted(pos_sorted, candidates, side="left")
    tn = np.searchsorted(neg_sorted, candidates, side="left")
    accuracy = (tp + tn) / y.size
    best = np.flatnonzero(accuracy == accuracy.max())
    chosen = best[np.argmin(np.abs(candidates[best] - 0.5))]
    return float(min(candidates[chosen], 1.0))


# ---------------------------------------------------------------------------------------------- latency


def latency_stats(latency_ms: Any) -> dict[str, float]:
    """Mean, median and 95th percentile (linear interpolation) of per-request latencies in ms."""
    values = np.asarray([v for v in np.asarray(latency_ms, dtype=float).ravel() if np.isfinite(v)])
    if not values.size:
        return {"latency_mean_ms": math.nan, "latency_p50_ms": math.nan, "latency_p95_ms": math.nan}
    return {
        "latency_mean_ms": float(values.mean()),
        "latency_p50_ms": float(np.percentile(values, 50)),
        "latency_p95_ms": float(np.percentile(values, 95)),
    }


# ---------------------------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    statistic: Callable[[np.ndarray], Mapping[str, float]],
    n_items: int,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of every value ``statistic(indices)`` returns.

    With ``groups`` (e.g. prompt ids), whole groups are resampled with replacement (cluster bootstrap).
    Replicates where a value is NaN (e.g. AUC of a one-class resample) are left out for that value; a value
    NaN in more than half of the replicates gets (NaN, NaN)."""
    if n_boot <= 0 or n_items == 0:
        return {}
    rng = np.random.default_rng(seed)
    if groups is not None:
        codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    else:
        members = None
    samples: dict[str, list[float]] = {}
    for _ in range(n_boot):
        if members is None:
            idx = rng.integers(0, n_items, size=n_items)
        else:
            picked = rng.integers(0, len(members), size=len(members))
            idx = np.concatenate([members[g] for g in picked])
        for name, value in statistic(idx).items():
            samples.setdefault(name, []).append(float(value))
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out: dict[str, tuple[float, float]] = {}
    for name, values in samples.items():
        arr = np.asarray(values)
        arr = arr[np.isfinite(arr)]
        if arr.size < n_boot / 2:
            out[name] = (math.nan, math.nan)
        else:
            out[name] = (float(np.percentile(arr, lo_q)), float(np.percentile(arr, hi_q)))
    return out


# ---------------------------------------------------------------------------------------------- all at once

# Metrics that get a bootstrap CI, in report order. "@0.5" / "@val" = at threshold 0.5 / the validation one.
THRESHOLD_NAMES = ("accuracy", "precision", "recall", "f1", "balanced_accuracy")
POINTWISE_NAMES = ("roc_auc", "pr_auc", "brier", "ece", "rmse_soft")


def score_metrics(
    y: np.ndarray, p: np.ndarray, soft: np.ndarray | None, val_threshold: float
) -> dict[str, float]:
    """The CI-carrying metrics of one (sub)sample."""
    out: dict[str, float] = {}
    for suffix, threshold in (("@0.5", 0.5), ("@val", val_threshold)):
        values = threshold_metrics(y, p, threshold)
        for name in THRESHOLD_NAMES:
            out[name + suffix] = values[name]
    out["roc_auc"] = roc_auc(y, p)
    out["pr_auc"] = average_precision(y, p)
    out["brier"] = brier(y, p)
    out["ece"] = expected_calibration_error(y, p)
    out["rmse_soft"] = rmse(p, soft) if soft is not None else math.nan
    return out


def evaluate_scores(
    y: Any,
    p: Any,
    soft: Any = None,
    *,
    val_threshold: float = 0.5,
    groups: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Point estimates, bootstrap CIs and the confusion matrix at both thresholds for one judge's scored items.

    Returns {"n", "n_defective", "threshold_val", "metrics": {name: value}, "ci": {name: [lo, hi]},
    "confusion@0.5": {...}, "confusion@val": {...}}."""
    y_arr, p_arr = _arrays(y, p)
    soft_arr = None if soft is None else np.asarray(soft, dtype=float).ravel()
    if soft_arr is not None and soft_arr.shape != p_arr.shape:
        raise MetricsError(f"soft labels differ in length ({soft_arr.size} vs {p_arr.size})")
    metrics = score_metrics(y_arr, p_arr, soft_arr, val_threshold)

    def statistic(idx: np.ndarray) -> dict[str, float]:
        return score_metrics(
            y_arr[idx], p_arr[idx], None if soft_arr is None else soft_arr[idx], val_threshold
        )

    ci = bootstrap_ci(statistic, y_arr.size, groups=groups, n_boot=n_boot, seed=seed)
    confusion = {}
    for suffix, threshold in (("@0.5", 0.5), ("@val", val_threshold)):
        values = threshold_metrics(y_arr, p_arr, threshold)
        confusion["confusion" + suffix] = {k: values[k] for k in ("tp", "fp", "fn", "tn")}
    return {
        "n": int(y_arr.size),
        "n_defective": int(y_arr.sum()),
        "threshold_val": float(val_threshold),
        "metrics": metrics,
        "ci": {name: list(bounds) for name, bounds in ci.items()},
        **confusion,
    }
