"""Confidence intervals over the judge's metrics: bootstrap CIs and the per-judge quality block of a report.

The metrics themselves and their conventions (thresholds, PR-AUC, ECE bins, RMSE) are vlm_judge.metrics, shared
with training; eval.compare reports what this module computes. Here:

- 95 % CIs: percentile bootstrap over *prompts* when groups are given (images of one prompt share a scene, so
  resampling single images would understate the variance), else over items. The threshold is held fixed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from vlm_judge.metrics.core import (
    MetricsError,
    as_arrays,
    average_precision,
    brier,
    expected_calibration_error,
    per_defect_roc_auc,
    rmse,
    roc_auc,
    threshold_metrics,
)

CI_LEVEL = 0.95


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
    y: np.ndarray,
    p: np.ndarray,
    soft: np.ndarray | None,
    val_threshold: float,
    defects: np.ndarray | None = None,
) -> dict[str, float]:
    """The CI-carrying metrics of one (sub)sample; roc_auc_<type> per defect type when ``defects`` is given."""
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
    if defects is not None:
        out.update({f"roc_auc_{kind}": auc for kind, auc in per_defect_roc_auc(p, defects).items()})
    return out


def evaluate_scores(
    y: Any,
    p: Any,
    soft: Any = None,
    *,
    defects: Sequence[Any] | None = None,
    val_threshold: float = 0.5,
    groups: Sequence[Any] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Point estimates, bootstrap CIs and the confusion matrix at both thresholds for one judge's scored items.

    Returns {"n", "n_defective", "threshold_val", "metrics": {name: value}, "ci": {name: [lo, hi]},
    "confusion@0.5": {...}, "confusion@val": {...}}. With ``defects`` (the defect type per item, "none" =
    clean), metrics and ci also hold roc_auc_<type> for every defect type (vlm_judge.metrics.per_defect_roc_auc)."""
    y_arr, p_arr = as_arrays(y, p)
    soft_arr = None if soft is None else np.asarray(soft, dtype=float).ravel()
    if soft_arr is not None and soft_arr.shape != p_arr.shape:
        raise MetricsError(f"soft labels differ in length ({soft_arr.size} vs {p_arr.size})")
    kinds = None if defects is None else np.asarray(defects).astype(str).ravel()
    if kinds is not None and kinds.shape != p_arr.shape:
        raise MetricsError(f"defect types differ in length ({kinds.size} vs {p_arr.size})")
    metrics = score_metrics(y_arr, p_arr, soft_arr, val_threshold, kinds)

    def statistic(idx: np.ndarray) -> dict[str, float]:
        return score_metrics(
            y_arr[idx],
            p_arr[idx],
            None if soft_arr is None else soft_arr[idx],
            val_threshold,
            None if kinds is None else kinds[idx],
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
