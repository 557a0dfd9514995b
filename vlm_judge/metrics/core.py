"""Pointwise metrics of a defect judge, shared by training (its compute_metrics) and the eval harness.

Conventions (eval's report repeats them):

- ``y`` is the assessors' hard label (1 = defective), ``p`` the judge's ``p_defect``; a prediction is defective
  when ``p >= threshold``.
- Threshold-dependent metrics are given at 0.5 and at a threshold chosen on the *validation* split by
  **maximising accuracy** (seed 000 names accuracy as the target metric). Candidates are the midpoints between
  consecutive distinct validation scores plus the two extremes; ties go to the candidate closest to 0.5.
- PR-AUC is *average precision* (sklearn's step-wise sum, no interpolation: the trapezoid over a PR curve is
  optimistic).
- ECE: **15 equal-width bins** over ``p_defect`` in [0, 1], each [k/15, (k+1)/15) with the last closed, the
  count-weighted mean of ``|mean(p) - mean(y)|`` per bin, i.e. calibration of P(defect) itself (the same
  quantity and bins as the reliability diagram), not of max(p, 1 - p).
- RMSE is against the assessors' soft label (share of assessors who saw a defect); seed 000's bar is <= 0.1.
- Per-defect ROC-AUC: images of one defect type against the clean images (``defect == "none"``), ground truth
  from the ``defect`` column.

ROC-AUC, average precision, Brier, ECE and the threshold metrics are numpy (ROC-AUC through
scipy.stats.rankdata) rather than sklearn calls because eval's bootstrap evaluates them 1000 times per judge:
sklearn's input validation costs ~1 ms a call, these ~20-50 us. tests/test_metrics.py checks each against
sklearn on fixed data. Plot curves come from sklearn directly (eval/plots.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

ECE_BINS = 15
THRESHOLD_RULE = "maximises accuracy on the validation split (ties: closest to 0.5)"
CLEAN_DEFECT = "none"  # the `defect` column's value for a clean image


class MetricsError(ValueError):
    """Inputs that metrics cannot be computed on (mismatched lengths, labels not 0/1, scores outside [0, 1])."""


# ---------------------------------------------------------------------------------------------- inputs


def as_arrays(
    y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(labels as int8, scores as float), flat; MetricsError unless same length, labels 0/1, scores in [0, 1]."""
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
    y, p = as_arrays(y, p)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(p)  # 1-based, ties get their mean rank
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: Any, p: Any) -> float:
    """PR-AUC as average precision: sum over distinct thresholds of (R_n - R_{n-1}) * P_n (sklearn's rule).

    NaN without positives."""
    y, p = as_arrays(y, p)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    # True and false positives of ``p >= t`` for every distinct score t, highest first; tied scores enter
    # together, so counts are taken at the last item of each run of equal scores.
    order = np.argsort(-p, kind="mergesort")
    p_sorted = p[order]
    last_of_run = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    tp = np.cumsum(y[order])[last_of_run]
    fp = np.arange(1, y.size + 1)[last_of_run] - tp
    recall_step = np.diff(np.r_[0.0, tp / n_pos])
    return float(np.sum(recall_step * tp / (tp + fp)))


def per_defect_roc_auc(p: Any, defects: Sequence[Any]) -> dict[str, float]:
    """ROC-AUC of each defect type against the clean images, {type: auc} sorted by type; {} without clean ones.

    Ground truth is the ``defect`` column (``"none"`` = clean), not the hard label: how well the judge separates
    that kind of defect from clean pictures. Empty types are ignored."""
    p_arr = np.asarray(p, dtype=float).ravel()
    kinds = np.asarray(defects).astype(str).ravel()
    if kinds.shape != p_arr.shape:
        raise MetricsError(f"defect types and scores differ in length ({kinds.size} vs {p_arr.size})")
    clean = kinds == CLEAN_DEFECT
    if not clean.any():
        return {}
    out = {}
    for kind in sorted(set(kinds) - {CLEAN_DEFECT, ""}):
        chosen = clean | (kinds == kind)
        out[kind] = roc_auc((kinds[chosen] == kind).astype(int), p_arr[chosen])
    return out


# ---------------------------------------------------------------------------------------------- probabilities


def brier(y: Any, p: Any) -> float:
    y, p = as_arrays(y, p)
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
    # Equal-width bins [k/n, (k+1)/n); p == 1 goes to the last bin. (sklearn's calibration_curve closes its
    # bins on the right instead, which moves the round scores verbalized judges give, 0.2, 0.4, ...)
    return np.minimum((p * n_bins).astype(int), n_bins - 1)


def reliability_curve(y: Any, p: Any, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin (ECE's): edges, item count, mean p_defect and observed defect rate (NaN if empty)."""
    y, p = as_arrays(y, p)
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
    y, p = as_arrays(y, p)
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
    y, p = as_arrays(y, p)
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
    y, p = as_arrays(y, p)
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


# ---------------------------------------------------------------------------------------------- summary


def judge_metrics(
    labels: Sequence[int],
    scores: Sequence[float],
    defects: Sequence[str] | None = None,
    soft_labels: Sequence[float] | None = None,
) -> dict[str, float]:
    """The headline numbers of one scored split, flat (training logs them as eval_<key> on validation and
    test_<key> on test): roc_auc, accuracy (at 0.5), brier, mean_p_defect, n; rmse_soft against the vote shares
    when given; roc_auc_<type> per defect type (per_defect_roc_auc) when defect types are given."""
    y, p = as_arrays(labels, scores)
    out = {
        "roc_auc": roc_auc(y, p),
        "accuracy": threshold_metrics(y, p, 0.5)["accuracy"],
        "brier": brier(y, p),
        "mean_p_defect": float(p.mean()),
        "n": float(y.size),
    }
    if soft_labels is not None:
        out["rmse_soft"] = rmse(p, soft_labels)
    if defects is not None:
        out.update({f"roc_auc_{kind}": auc for kind, auc in per_defect_roc_auc(p, defects).items()})
    return out
