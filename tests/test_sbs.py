"""eval.sbs_stats: SbS verdicts, the paired test, macro-accuracy and pairwise accuracy on hand-made data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from eval import sbs_power as P
from eval import sbs_stats as S


def _frame(n_prompts: int = 30, seed: int = 0) -> pd.DataFrame:
    """Systems: good (rarely defective), bad (often), twin (same rate as good). 5 assessors per image."""
    rng = np.random.default_rng(seed)
    rates = {"good": 0.15, "bad": 0.7, "twin": 0.15}
    rows = []
    for i in range(n_prompts):
        for system, rate in rates.items():
            defective = rng.random() < rate
            votes = rng.binomial(5, 0.85 if defective else 0.1)
            rows.append(
                {
                    "image": f"images/p{i:03d}_{system}.png",
                    "prompt_id": f"p{i:03d}",
                    "system": system,
                    "soft_label": votes / 5,
                    "label": int(votes >= 3),
                }
            )
    frame = pd.DataFrame(rows)
    frame["oracle"] = frame["soft_label"]  # a judge that reproduces the assessors
    frame["inverted"] = 1 - frame["soft_label"]  # a judge that gets every direction backwards
    return frame


def _pair(pairs, a, b):
    return next(p for p in pairs if {p.system_a, p.system_b} == {a, b})


def test_assessor_verdicts_and_significance():
    pairs = S.sbs_pairs(_frame(), "oracle")
    assert len(pairs) == 3
    good_bad = _pair(pairs, "bad", "good")
    assert good_bad.assessors.winner == "good" and good_bad.assessors.significant
    assert good_bad.assessors.n == 30
    # Sign convention: A - B > 0 means B (the second) is less defective.
    assert (good_bad.assessors.mean_diff > 0) == (good_bad.system_b == "good")
    twin = _pair(pairs, "good", "twin")
    assert not twin.assessors.significant  # same defect rate


def test_macro_accuracy_oracle_and_inverted():
    frame = _frame()
    oracle = S.sbs_summary(S.sbs_pairs(frame, "oracle"))
    assert oracle["n_assessor_significant"] == 2  # good/bad, twin/bad
    assert oracle["macro_accuracy"] == 1.0 and oracle["strict_macro_accuracy"] == 1.0
    assert oracle["n_judge_significant_opposite"] == 0
    lo, hi = oracle["macro_accuracy_ci"]
    assert lo < 1.0 and hi == 1.0  # two pairs prove little: the Wilson interval says so
    inverted = S.sbs_summary(S.sbs_pairs(frame, "inverted"))
    assert inverted["macro_accuracy"] == 0.0
    assert inverted["n_judge_significant_opposite"] == 2


def test_judge_failures_shrink_the_judge_side_only():
    frame = _frame()
    frame.loc[frame.index[:9], "oracle"] = np.nan  # the judge failed on the first 3 prompts (3 systems each)
    pair = _pair(S.sbs_pairs(frame, "oracle"), "bad", "good")
    assert pair.assessors.n == 30 and pair.judge.n == 27


def test_paired_test_is_wilcoxon_or_exact_sign_test():
    d = np.array([0.4, 0.2, -0.1, 0.6, 0.8, 0.0, 0.3, -0.2, 0.5, 0.7, 0.9, 0.15])
    p, direction = S.paired_test(d)
    assert p == pytest.approx(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    assert direction == 1
    tied = np.array([1, 1, 1, 1, 1, 1, 1, -1, 0, 0])  # hard labels: all |d| equal -> sign test
    p, direction = S.paired_test(tied)
    assert p == pytest.approx(stats.binomtest(7, 8, 0.5).pvalue)
    assert direction == 1
    assert S.paired_test(np.zeros(5)) == (1.0, 0)
    # The smallest sample that can reach 0.05 with the exact sign test is 6 consistent prompts.
    assert S.paired_test(np.ones(5))[0] > 0.05 and S.paired_test(np.ones(6))[0] < 0.05


def test_rank_direction_against_the_mean_is_not_significant():
    # Differences A - B: one prompt strongly favours A (-100), fifteen slightly favour B (+1). The mean is
    # negative (A wins), the signed ranks point to B. When the two disagree no significant verdict is claimed.
    d = np.r_[-100.0, np.ones(15)]
    p, direction = S.paired_test(d)
    assert p < 0.05 and direction == 1 and d.mean() < 0
    frame = pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(16)] * 2,
            "system": ["a"] * 16 + ["b"] * 16,
            "soft_label": np.r_[d, np.zeros(16)],
            "p": 0.5,
        }
    )
    (pair,) = S.sbs_pairs(frame, "p")
    assert pair.assessors.winner == "a" and pair.assessors.p_value < 0.05 and not pair.assessors.significant


def test_holm():
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert S.holm([0.5]) == [0.5]
    frame = _frame()
    plain = S.sbs_pairs(frame, "oracle")
    corrected = S.sbs_pairs(frame, "oracle", correction="holm")
    for a, b in zip(plain, corrected, strict=True):
        assert b.assessors.p_value >= a.assessors.p_value
    with pytest.raises(S.SbsError, match="correction"):
        S.sbs_pairs(frame, "oracle", correction="bonferroni")


def test_float_noise_is_a_tie_not_a_verdict():
    # Per-prompt differences that sum to zero only up to rounding (0.2 + 0.4 - 0.6 in floating point).
    frame = pd.DataFrame(
        {
            "prompt_id": ["p1", "p2", "p3"] * 2,
            "system": ["a"] * 3 + ["b"] * 3,
            "soft_label": [0.2, 0.4, 0.0, 0.0, 0.0, 0.6],
            "p": [0.5] * 6,
        }
    )
    (pair,) = S.sbs_pairs(frame, "p")
    assert pair.assessors.mean_diff == 0.0 and pair.assessors.winner is None and pair.agree is None
    assert pair.judge.winner is None


def test_unshared_prompts_are_not_an_sbs():
    frame = pd.DataFrame(
        {
            "prompt_id": ["p1", "p2", "p1", "p2"],
            "system": ["a", "a", "b", "c"],
            "soft_label": [0.0, 1.0, 1.0, 0.0],
            "p": [0.1, 0.9, 0.8, 0.2],
        }
    )
    pairs = S.sbs_pairs(frame, "p")
    assert {(p.system_a, p.system_b) for p in pairs} == {("a", "b"), ("a", "c")}
    assert all(p.assessors.n == 1 for p in pairs)


def test_pairwise_accuracy():
    frame = pd.DataFrame(
        {
            "prompt_id": ["p1", "p1", "p1", "p2", "p2", "p3", "p3"],
            "label": [1, 0, 0, 1, 0, 0, 0],
            "p": [0.9, 0.2, 0.9, 0.3, 0.7, 0.1, 0.5],
        }
    )
    # p1: (0.9 vs 0.2) right, (0.9 vs 0.9) tie -> 1.5 of 2; p2: wrong -> 0 of 1; p3 has no defective image.
    out = S.pairwise_accuracy(frame, "p", n_boot=200)
    assert out["n_pairs"] == 3 and out["n_prompts"] == 2 and out["n_ties"] == 1
    assert out["accuracy"] == pytest.approx(1.5 / 3)
    assert 0.0 <= out["ci"][0] <= out["ci"][1] <= 1.0
    empty = S.pairwise_accuracy(frame[frame["prompt_id"] == "p3"], "p")
    assert empty["n_pairs"] == 0 and math.isnan(empty["accuracy"])


def test_sbs_report_shape_and_missing_columns():
    report = S.sbs_report(_frame(), "oracle", n_boot=50)
    assert report["assessor_score"] == "soft_label" and report["summary"]["n_pairs"] == 3
    assert {"system_a", "assessors_p_value", "judge_winner", "agree"} <= set(report["pairs"][0])
    assert report["pairwise"]["accuracy"] > 0.9
    with pytest.raises(S.SbsError, match="system"):
        S.sbs_report(_frame().drop(columns=["system"]), "oracle")


# ---------------------------------------------------------------------------------------------- label-free SbS


def test_side_tests_is_the_sbs_pairs_code_path():
    frame = _frame()
    pairs = S.sbs_pairs(frame, "oracle", correction="holm")
    keys = [(p.system_a, p.system_b) for p in pairs]
    judge = S.side_tests(frame, "oracle", keys, correction="holm")
    assessors = S.side_tests(frame, "soft_label", keys, correction="holm")
    for pair, j, a in zip(pairs, judge, assessors, strict=True):
        assert j == pair.judge and a == pair.assessors
    verdicts = {k: S.verdict(t) for k, t in zip(keys, judge, strict=True)}
    assert (
        verdicts[("bad", "good")] == "B better" and verdicts[("good", "twin")] == "no significant difference"
    )
    assert verdicts[("bad", "twin")] == "B better"
    assert S.verdict(S.PairTest(0, math.nan, 1.0, None)) == "no shared scored prompt"
    d = S.pair_differences(frame, "oracle", "bad", "good")
    assert len(d) == 30 and d.mean() == pytest.approx(_pair(pairs, "bad", "good").judge.mean_diff)


def test_wins_ties_losses_and_bootstrap_ci():
    d = np.array([-0.3, -0.1, 0.0, 1e-12, 0.2, 0.4, 0.5])
    assert P.wins_ties_losses(d) == {"a_wins": 2, "ties": 2, "b_wins": 3}
    rng = np.random.default_rng(0)
    sample = rng.normal(0.1, 0.2, 60)
    lo, hi = P.bootstrap_mean_ci(sample, 2000, seed=1)
    assert lo < sample.mean() < hi
    # The percentile interval is close to the normal one, mean +- 1.96 SE, at n = 60.
    se = sample.std(ddof=1) / math.sqrt(sample.size)
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert P.bootstrap_mean_ci(sample, 2000, seed=1) == [lo, hi]  # seeded
    assert all(math.isnan(v) for v in P.bootstrap_mean_ci(sample[:1]))
    assert P.bootstrap_mean_ci(np.zeros(5)) == [0.0, 0.0]


def _power(
    diffs: np.ndarray, n: int, shift: float = 0.0, sims: int = 300, seed: int = 0, direction: float | None = None
) -> float:
    """Power of S.paired_test itself at n prompts resampled from diffs + shift (the check of the formula): the share
    of significant verdicts in `direction` (default: the sign of the pool's mean)."""
    rng = np.random.default_rng(seed)
    pool = diffs + shift
    expected = np.sign(pool.mean()) if direction is None else direction
    hits = 0
    for _ in range(sims):
        sample = rng.choice(pool, n)
        p, direction = S.paired_test(sample)
        hits += p < 0.05 and direction == expected
    return hits / sims


def test_prompts_for_power_and_mde_hold_for_the_real_test():
    d = np.random.default_rng(2).normal(0.08, 0.2, 40)
    n = P.prompts_for_power(d)
    assert 20 < n < 200
    # Noether's n gives ~80 % power to the real test (the approximation errs a few points on the safe side).
    assert 0.72 <= _power(d, n) <= 0.92
    assert _power(d, n // 2) < 0.7
    mde = P.minimum_detectable_effect(d)
    centred = P.centred(d)
    assert 0.72 <= _power(centred, d.size, shift=mde) <= 0.92
    assert 0.72 <= _power(-centred, d.size, shift=mde) <= 0.95  # either direction
    assert _power(centred, d.size, shift=mde / 2) < 0.6
    # A larger effect needs fewer prompts; more prompts detect smaller effects; stricter alpha needs more.
    assert P.prompts_for_power(d + 0.1) < n and P.prompts_for_power(d, alpha=0.01) > n
    assert P.minimum_detectable_effect(np.r_[d, d]) < mde
    # Degenerate inputs: no direction, no spread, too few prompts.
    assert P.prompts_for_power(np.array([0.1, -0.1, 0.2, -0.2])) is None
    assert P.minimum_detectable_effect(np.zeros(30)) is None
    assert P.minimum_detectable_effect(d[:8]) is None
    # Skewed differences (most prompts tied near 0, a few large ones, as p_defect differences often are): the
    # detectable shift is a real positive number with ~80 % power, not 0 (the mean-centred figure was 0.0000).
    skewed = np.r_[np.zeros(60), np.random.default_rng(3).exponential(0.3, 12)] + 0.001 * np.arange(72)
    mde_skewed = P.minimum_detectable_effect(skewed)
    assert mde_skewed > 0.01
    c = P.centred(skewed)
    up, down = (_power(c, c.size, shift=s * mde_skewed, direction=s) for s in (1.0, -1.0))
    harder, easier = sorted([up, down])
    assert 0.72 <= harder <= 0.95 and easier >= 0.72  # the MDE is the larger of the two directions' shifts
    # Every difference the same way (p' = 1): the formula's floor, (z_0.975 + z_0.8)^2 / 0.75 -> 11 prompts.
    assert P.prompts_for_power(np.ones(3)) == math.ceil(
        (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) ** 2 / 0.75
    )
