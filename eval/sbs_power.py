"""Per-pair numbers of the label-free SbS (``python -m eval.sbs``) beyond the verdict: per-prompt wins/ties/losses,
a percentile-bootstrap CI of the mean difference over prompts (scipy.stats.bootstrap), and planning numbers
(``POWER_METHOD``, ``MDE_METHOD``): the prompts needed for 80 % power and the minimum detectable effect at the
prompts given, both from the observed per-prompt differences (tests/test_sbs.py checks them against the power
of eval.sbs.paired_test itself, the test that gives the verdict).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from .sbs_stats import ALPHA, TIE_TOLERANCE

POWER = 0.8
POWER_METHOD = (
    "Noether's (1987) normal approximation for the Wilcoxon signed-rank test: n = (z[1-alpha/2] + z[power])^2 "
    "/ (3 (p' - 1/2)^2), p' = P(d_i + d_j > 0) estimated from the observed per-prompt differences (all pairs "
    "i < j, ties 1/2); under holm, alpha/m (Bonferroni over the m pairs, conservative); at least 6 prompts"
)
MDE_METHOD = (
    "the same formula solved for a shift delta of the observed differences centred on their Hodges-Lehmann "
    "pseudo-median, at the observed number of prompts: the smallest |shift| with 80 % power in either direction "
    "(undefined below ~11 prompts, where even p' = 1 is not enough for the approximation)"
)
MIN_PROMPTS = 6  # fewer prompts can never reach p < 0.05 with the exact sign test


def wins_ties_losses(diffs: np.ndarray) -> dict[str, int]:
    """Per-prompt outcomes of A vs B from d = score(A) - score(B): A wins when its score is lower."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    return {
        "a_wins": int((d < -TIE_TOLERANCE).sum()),
        "ties": int((np.abs(d) <= TIE_TOLERANCE).sum()),
        "b_wins": int((d > TIE_TOLERANCE).sum()),
    }


def bootstrap_mean_ci(
    diffs: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile-bootstrap CI of the mean per-prompt difference, resampling prompts (scipy.stats.bootstrap);
    [nan, nan] with fewer than 2 prompts or n_boot = 0."""
    d = _finite(diffs)
    if n_boot <= 0 or d.size < 2:
        return [math.nan, math.nan]
    if np.ptp(d) == 0:
        return [float(d[0]), float(d[0])]  # every resample has the same mean
    result = stats.bootstrap(
        (d,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def _finite(diffs: np.ndarray) -> np.ndarray:
    d = np.asarray(diffs, dtype=float)
    return d[np.isfinite(d)]


def _walsh_sums(d: np.ndarray) -> np.ndarray:
    i, j = np.triu_indices(d.size, k=1)
    return d[i] + d[j]


def _z_total(alpha: float, power: float) -> float:
    return float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))


def prompts_for_power(diffs: np.ndarray, *, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """Prompts at which the observed effect is significant with ``power`` (POWER_METHOD); None when the
    differences have no direction (p' = 1/2)."""
    d = _finite(diffs)
    if d.size < 2:
        return None
    sums = _walsh_sums(d)
    p_prime = float((sums > 0).mean() + 0.5 * (sums == 0).mean())
    if abs(p_prime - 0.5) < TIE_TOLERANCE:
        return None
    n = _z_total(alpha, power) ** 2 / (3 * (p_prime - 0.5) ** 2)
    return max(MIN_PROMPTS, math.ceil(n - 1e-9))


def centred(diffs: np.ndarray) -> np.ndarray:
    """The differences shifted so that their Hodges-Lehmann pseudo-median (the location the signed-rank test
    tests) is 0: under this null p' = P(c_i + c_j > 0) is 1/2, also for skewed differences (many prompts tied at
    ~0, a few large ones), where centring on the mean leaves p' far from 1/2 and made the effect look detectable
    at |delta| = 0."""
    d = _finite(diffs)
    i, j = np.triu_indices(d.size)  # i <= j: the Walsh averages include each difference itself
    return d - float(np.median((d[i] + d[j]) / 2))


def minimum_detectable_effect(
    diffs: np.ndarray, *, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """Smallest shift |delta| of the observed differences (centred(), so their location is 0) that the test would
    detect with ``power`` at the observed number of prompts, in either direction (the larger of the two, MDE_METHOD);
    None when the differences have no spread or the prompts are too few for any effect."""
    d = _finite(diffs)
    if d.size < 2 or np.ptp(d) == 0:
        return None
    target = 0.5 + _z_total(alpha, power) / math.sqrt(3 * d.size)  # the p' the prompts given need
    if target > 1:
        return None
    # p'(delta) = P(c_i + c_j + 2 delta > 0): the smallest delta with at least ceil(target * M) of the M pair sums
    # above -2 delta; the same for a negative shift on the mirrored differences.
    c = centred(d)
    k = math.ceil(target * (c.size * (c.size - 1) // 2) - 1e-9)
    shifts = []
    for sign in (1.0, -1.0):
        sums = np.sort(_walsh_sums(sign * c))
        shifts.append(max(0.0, float(-sums[sums.size - k]) / 2))
    return max(shifts)
