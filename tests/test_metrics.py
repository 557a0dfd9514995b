"""vlm_judge.metrics against scikit-learn on fixed data (with ties, imbalance and edge cases); vlm_judge.metrics.confidence's
bootstrap CIs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from vlm_judge import metrics as M
from vlm_judge.metrics import confidence as E


def _data(n: int, seed: int, *, rounding: int | None = 2, positive_rate: float = 0.4):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_rate).astype(int)
    p = np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1)
    if rounding is not None:
        p = np.round(p, rounding)  # many ties, as a verbalized judge gives
    soft = np.clip(y * 0.6 + rng.random(n) * 0.4, 0, 1)
    return y, p, soft


CASES = [
    _data(200, 0),
    _data(57, 1, rounding=None),
    _data(300, 2, rounding=1, positive_rate=0.1),
    _data(40, 3),
]


@pytest.mark.parametrize("y,p,soft", CASES)
def test_ranking_metrics_match_sklearn(y, p, soft):
    assert M.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert M.average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)


@pytest.mark.parametrize("y,p,soft", CASES)
@pytest.mark.parametrize("threshold", [0.5, 0.31, 0.0, 1.0])
def test_threshold_metrics_match_sklearn(y, p, soft, threshold):
    pred = (p >= threshold).astype(int)
    ours = M.threshold_metrics(y, p, threshold)
    assert ours["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert ours["precision"] == pytest.approx(skm.precision_score(y, pred, zero_division=0))
    assert ours["recall"] == pytest.approx(skm.recall_score(y, pred, zero_division=0))
    assert ours["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0))
    assert ours["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert (ours["tn"], ours["fp"], ours["fn"], ours["tp"]) == (tn, fp, fn, tp)


@pytest.mark.parametrize("y,p,soft", CASES)
def test_probability_metrics(y, p, soft):
    assert M.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p))
    assert M.rmse(p, soft) == pytest.approx(math.sqrt(skm.mean_squared_error(soft, p)))
    # ECE by a plain loop over 15 equal-width bins, the last closed.
    edges = np.linspace(0, 1, 16)
    total = 0.0
    for k in range(15):
        in_bin = (p >= edges[k]) & ((p < edges[k + 1]) if k < 14 else (p <= 1.0))
        if in_bin.any():
            total += in_bin.sum() / len(p) * abs(p[in_bin].mean() - y[in_bin].mean())
    assert M.expected_calibration_error(y, p) == pytest.approx(total)
    curve = M.reliability_curve(y, p)
    assert curve["count"].sum() == len(p)


def test_ece_known_values():
    assert M.expected_calibration_error([0, 1, 0, 1], [0.0, 1.0, 0.0, 1.0]) == 0.0
    assert M.expected_calibration_error([0, 0, 0, 0], [1.0, 1.0, 1.0, 1.0]) == 1.0
    # p = 0.5 with half defective in that bin: perfectly calibrated.
    assert M.expected_calibration_error([0, 1], [0.5, 0.5]) == 0.0


def test_one_class_and_empty_inputs():
    assert math.isnan(M.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
    assert math.isnan(M.average_precision([0, 0], [0.2, 0.5]))
    ours = M.threshold_metrics([1, 1, 1], [0.2, 0.5, 0.9])
    assert ours["balanced_accuracy"] == pytest.approx(2 / 3)  # the recall of the only class present
    assert math.isnan(M.brier([], []))
    with pytest.raises(M.MetricsError, match="differ in length"):
        M.roc_auc([0, 1], [0.5])
    with pytest.raises(M.MetricsError, match="0 or 1"):
        M.brier([0, 2], [0.5, 0.5])
    with pytest.raises(M.MetricsError, match=r"\[0, 1\]"):
        M.brier([0, 1], [0.5, 1.5])


def test_choose_threshold_maximises_accuracy():
    y, p, _ = _data(150, 7)
    t = M.choose_threshold(y, p)
    best = max(skm.accuracy_score(y, (p >= c).astype(int)) for c in np.r_[np.unique(p), 1.01])
    assert skm.accuracy_score(y, (p >= t).astype(int)) == pytest.approx(best)
    # A scorer that is right only above 0.8: the threshold moves there.
    y2 = np.array([0, 0, 0, 0, 1, 1])
    p2 = np.array([0.6, 0.7, 0.75, 0.78, 0.85, 0.9])
    assert 0.78 < M.choose_threshold(y2, p2) < 0.85
    # Flat optimum: the candidate closest to 0.5 wins.
    assert M.choose_threshold([0, 1], [0.1, 0.9]) == pytest.approx(0.5)
    # All one class: predict it everywhere.
    assert M.threshold_metrics([1, 1], [0.2, 0.3], M.choose_threshold([1, 1], [0.2, 0.3]))["accuracy"] == 1.0
    assert M.threshold_metrics([0, 0], [0.8, 0.9], M.choose_threshold([0, 0], [0.8, 0.9]))["accuracy"] == 1.0


def test_latency_stats():
    stats = M.latency_stats([10, 20, 30, 40, float("nan"), 1000])
    assert stats["latency_mean_ms"] == pytest.approx(220)
    assert stats["latency_p50_ms"] == pytest.approx(30)
    assert stats["latency_p95_ms"] == pytest.approx(np.percentile([10, 20, 30, 40, 1000], 95))
    assert math.isnan(M.latency_stats([])["latency_mean_ms"])


def test_bootstrap_ci_covers_point_and_is_reproducible():
    y, p, soft = _data(120, 11)
    groups = np.repeat(np.arange(40), 3)
    a = E.evaluate_scores(y, p, soft, val_threshold=0.45, groups=groups, n_boot=300, seed=5)
    b = E.evaluate_scores(y, p, soft, val_threshold=0.45, groups=groups, n_boot=300, seed=5)
    assert a == b
    assert set(a["ci"]) == set(a["metrics"])
    for name, (lo, hi) in a["ci"].items():
        assert lo <= hi, name
    for name in ("roc_auc", "accuracy@0.5", "brier", "rmse_soft"):  # smooth statistics: the point lies inside
        assert a["ci"][name][0] <= a["metrics"][name] <= a["ci"][name][1]
    assert a["metrics"]["accuracy@val"] == pytest.approx(skm.accuracy_score(y, (p >= 0.45).astype(int)))
    assert set(a["metrics"]) == {
        *(f"{m}{s}" for m in E.THRESHOLD_NAMES for s in ("@0.5", "@val")),
        *E.POINTWISE_NAMES,
    }


def test_grouped_bootstrap_resamples_whole_groups():
    seen: list[np.ndarray] = []

    def stat(idx):
        seen.append(idx)
        return {"n": float(len(idx))}

    groups = ["a", "a", "b", "b", "b", "c"]
    E.bootstrap_ci(stat, 6, groups=groups, n_boot=50, seed=0)
    members = {"a": {0, 1}, "b": {2, 3, 4}, "c": {5}}
    for idx in seen:
        picked = list(idx)
        for members_of in members.values():
            count = sum(i in members_of for i in picked)
            assert count % len(members_of) == 0  # a group enters whole or not at all


def test_per_defect_auc_is_each_type_against_clean_images():
    defects = ["none", "none", "none", "smear", "smear", "extra_limb", "extra_limb", ""]
    p = [0.1, 0.3, 0.6, 0.9, 0.5, 0.2, 0.05, 0.99]
    auc = M.per_defect_roc_auc(p, defects)
    clean = [0.1, 0.3, 0.6]
    assert list(auc) == ["extra_limb", "smear"]  # sorted; an empty type is ignored
    assert auc["smear"] == pytest.approx(skm.roc_auc_score([0, 0, 0, 1, 1], clean + [0.9, 0.5]))
    assert auc["extra_limb"] == pytest.approx(skm.roc_auc_score([0, 0, 0, 1, 1], clean + [0.2, 0.05]))
    # No clean image: nothing to compare with.
    assert M.per_defect_roc_auc([0.5, 0.7], ["smear", "blur"]) == {}
    labels = [0, 0, 0, 1, 1, 1, 1, 1]
    summary = M.judge_metrics(labels, p, defects=defects, soft_labels=[0.5] * 8)
    assert summary["roc_auc_smear"] == auc["smear"] and summary["roc_auc"] == M.roc_auc(labels, p)
    assert summary["accuracy"] == pytest.approx(skm.accuracy_score(labels, np.asarray(p) >= 0.5))
    assert summary["n"] == 8 and "rmse_soft" in summary
    assert set(M.judge_metrics(labels, p)) == {"roc_auc", "accuracy", "brier", "mean_p_defect", "n"}


def test_evaluate_scores_adds_per_defect_auc_with_cis_and_keeps_the_rest():
    y, p, soft = _data(120, 11)
    rng = np.random.default_rng(3)
    defects = np.where(y == 1, rng.choice(["smear", "blur"], size=y.size), "none")
    groups = np.repeat(np.arange(40), 3)
    plain = E.evaluate_scores(y, p, soft, val_threshold=0.45, groups=groups, n_boot=200, seed=5)
    typed = E.evaluate_scores(
        y, p, soft, defects=defects, val_threshold=0.45, groups=groups, n_boot=200, seed=5
    )
    extra = {"roc_auc_blur", "roc_auc_smear"}
    assert set(typed["metrics"]) == set(plain["metrics"]) | extra and set(typed["ci"]) == set(
        typed["metrics"]
    )
    assert {k: typed["metrics"][k] for k in plain["metrics"]} == plain["metrics"]
    assert {k: typed["ci"][k] for k in plain["ci"]} == plain["ci"]  # same resamples, same CIs
    assert typed["metrics"]["roc_auc_smear"] == M.per_defect_roc_auc(p, defects)["smear"]
    for name in extra:
        assert typed["ci"][name][0] <= typed["metrics"][name] <= typed["ci"][name][1]
