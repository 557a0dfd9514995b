"""The judge's metrics, in one place: point metrics (core: ROC-AUC, PR-AUC, Brier, ECE, RMSE, thresholds,
per-defect ROC-AUC, latency), shared by training's compute_metrics and the eval harness, and their bootstrap
confidence intervals (confidence)."""

from vlm_judge.metrics.core import (
    CLEAN_DEFECT,
    ECE_BINS,
    THRESHOLD_RULE,
    MetricsError,
    as_arrays,
    average_precision,
    brier,
    choose_threshold,
    expected_calibration_error,
    judge_metrics,
    latency_stats,
    per_defect_roc_auc,
    reliability_curve,
    rmse,
    roc_auc,
    threshold_metrics,
)

__all__ = [
    "CLEAN_DEFECT",
    "ECE_BINS",
    "MetricsError",
    "THRESHOLD_RULE",
    "as_arrays",
    "average_precision",
    "brier",
    "choose_threshold",
    "expected_calibration_error",
    "judge_metrics",
    "latency_stats",
    "per_defect_roc_auc",
    "reliability_curve",
    "rmse",
    "roc_auc",
    "threshold_metrics",
]
