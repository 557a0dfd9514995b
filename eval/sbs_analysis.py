"""Every number of the label-free SbS report: per system (images, mean p_defect, defect rate), per pair of systems
(the judge's paired test and verdict, with labels the assessors' beside it, wins/ties/losses, bootstrap CI,
planning numbers) and, with a baseline, the score drift of every other system against it."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from . import sbs_power as P
from . import sbs_stats as S
from .drift import DriftInputError, drift_report


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
            **P.wins_ties_losses(d),
            "mean_diff_ci": P.bootstrap_mean_ci(d, n_boot, seed),
            "judge": _test_row(judge_tests[index], a, b),
            "prompts_for_80_power": P.prompts_for_power(d, alpha=plan_alpha),
            "minimum_detectable_effect": P.minimum_detectable_effect(d, alpha=plan_alpha),
        }
        if assessor_tests is not None:
            row["assessors"] = _test_row(assessor_tests[index], a, b)
            row["assessors_agree"] = row["judge"]["verdict"] == row["assessors"]["verdict"]
            row["assessors_significant"] = row["assessors"]["significant"]
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
