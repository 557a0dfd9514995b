"""eval.drift: PSI / KS / Jensen-Shannon / shifts on generated score distributions, the alert rule and the CLI's
exit codes (0 no drift, 3 drift, 2 bad input)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

from eval import drift as D


def _scores(a: float, b: float, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).beta(a, b, n)


def test_shifted_distribution_drifts_a_resample_does_not():
    reference = _scores(2, 5, 2000, seed=0)  # mean ~0.29
    resample = _scores(2, 5, 2000, seed=1)  # the same distribution, other draws
    shifted = _scores(4, 4, 2000, seed=2)  # mean 0.5
    same = D.drift_report(reference, resample)
    moved = D.drift_report(reference, shifted)
    assert not same["drift"] and same["psi"] < 0.05 and same["ks_p_value"] > 0.01
    assert moved["drift"] and moved["psi"] > D.PSI_ALERT and moved["ks_p_value"] < 1e-6
    assert moved["mean_shift"] == pytest.approx(shifted.mean() - reference.mean())
    assert moved["quantile_shift"]["q50"] == pytest.approx(np.median(shifted) - np.median(reference))
    assert moved["js_distance"] > same["js_distance"]


def test_measures_match_their_definitions():
    reference = _scores(2, 5, 500, seed=3)
    current = _scores(3, 3, 400, seed=4)
    report = D.drift_report(reference, current)
    # PSI and JS over 10 equal-width bins of [0, 1], computed here with numpy's histogram.
    edges = np.linspace(0, 1, 11)
    ref = np.histogram(reference, edges)[0] / reference.size
    cur = np.histogram(current, edges)[0] / current.size
    floor_ref, floor_cur = np.maximum(ref, D.PSI_FLOOR), np.maximum(cur, D.PSI_FLOOR)
    assert report["psi"] == pytest.approx(np.sum((floor_cur - floor_ref) * np.log(floor_cur / floor_ref)))
    assert report["js_distance"] == pytest.approx(distance.jensenshannon(ref, cur, base=2))
    ks = stats.ks_2samp(reference, current)
    assert (report["ks_statistic"], report["ks_p_value"]) == pytest.approx((ks.statistic, ks.pvalue))
    assert (report["n_reference"], report["n_current"]) == (500, 400)
    # Out-of-range values land in the end bins instead of vanishing.
    assert D.psi(np.array([-0.5, 0.05]), np.array([0.01, 0.02]), edges) == pytest.approx(0.0)
    with pytest.raises(D.DriftInputError, match="at least 2 scores"):
        D.drift_report(np.array([0.1]), current)


def test_cli_exit_codes_and_inputs(tmp_path, capsys):
    def write(name: str, values: np.ndarray, **columns) -> str:
        path = tmp_path / name
        pd.DataFrame(
            {"image": [f"i{k}.png" for k in range(values.size)], "p_defect": values, **columns}
        ).to_csv(path, index=False)
        return str(path)

    ref = write("ref.csv", _scores(2, 5, 300, seed=5))
    again = write("again.csv", np.r_[_scores(2, 5, 300, seed=6), np.nan])  # one failed item
    moved = write("moved.csv", _scores(5, 2, 300, seed=7))
    assert D.main(["--reference", ref, "--current", again, "--output", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("no drift: PSI") and "Jensen-Shannon" in out
    saved = json.loads((tmp_path / "d.json").read_text())
    assert saved["current_rows_without_score"] == 1 and saved["n_current"] == 300 and not saved["drift"]
    assert D.main(["--reference", ref, "--current", moved]) == D.EXIT_DRIFT
    assert capsys.readouterr().out.startswith("DRIFT: PSI")

    # A predictions.csv with two judges needs --judge.
    two = pd.concat(
        [
            pd.DataFrame({"judge": "a", "p_defect": _scores(2, 5, 100, seed=8)}),
            pd.DataFrame({"judge": "b", "p_defect": _scores(5, 2, 100, seed=9)}),
        ]
    )
    two.to_csv(tmp_path / "predictions.csv", index=False)
    preds = str(tmp_path / "predictions.csv")
    assert D.main(["--reference", ref, "--current", preds]) == D.EXIT_BAD_INPUT
    assert "several judges (a, b); pick one with --judge" in capsys.readouterr().err
    assert D.main(["--reference", ref, "--current", preds, "--judge", "a"]) == 0
    assert D.main(["--reference", ref, "--current", preds, "--judge", "b"]) == D.EXIT_DRIFT
    capsys.readouterr()

    bad = {
        "missing.csv": ("file does not exist", None),
        "nocol.csv": ("no column 'p_defect'", pd.DataFrame({"score": [0.1, 0.2]})),
        "onevalue.csv": ("1 usable value(s)", pd.DataFrame({"p_defect": [0.1, None]})),
    }
    for name, (message, table) in bad.items():
        if table is not None:
            table.to_csv(tmp_path / name, index=False)
        assert D.main(["--reference", ref, "--current", str(tmp_path / name)]) == D.EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.startswith("error: ") and name in err and message in err, err


def test_systems_of_one_scores_table_are_compared_with_system_flags(tmp_path, capsys):
    scores = pd.concat(
        [
            pd.DataFrame({"system": "v1", "prompt_id": range(200), "p_defect": _scores(2, 5, 200, seed=10)}),
            pd.DataFrame({"system": "v2", "prompt_id": range(200), "p_defect": _scores(2, 5, 200, seed=11)}),
            pd.DataFrame({"system": "v3", "prompt_id": range(200), "p_defect": _scores(5, 2, 200, seed=12)}),
        ]
    )
    path = str(tmp_path / "scores.csv")
    scores.to_csv(path, index=False)
    out = tmp_path / "d.json"
    same = ["--reference", path, "--current", path, "--output", str(out)]
    assert D.main([*same, "--reference-system", "v1", "--current-system", "v2"]) == 0
    saved = json.loads(out.read_text())
    assert saved["n_reference"] == saved["n_current"] == 200
    assert (saved["reference_system"], saved["current_system"]) == ("v1", "v2")
    assert D.main([*same, "--reference-system", "v1", "--current-system", "v3"]) == D.EXIT_DRIFT
    # --system applies to both sides; a side flag overrides it.
    assert D.main([*same, "--system", "v1", "--current-system", "v3"]) == D.EXIT_DRIFT
    assert D.main([*same, "--system", "v2"]) == 0 and json.loads(out.read_text())["psi"] == 0.0
    capsys.readouterr()
    assert D.main([*same, "--system", "v9"]) == D.EXIT_BAD_INPUT
    assert "no rows of system 'v9' (systems: v1, v2, v3)" in capsys.readouterr().err
    plain = tmp_path / "plain.csv"
    pd.DataFrame({"p_defect": _scores(2, 5, 50, seed=13)}).to_csv(plain, index=False)
    assert D.main(["--reference", str(plain), "--current", path, "--system", "v1"]) == D.EXIT_BAD_INPUT
    assert "no 'system' column to select system 'v1' from" in capsys.readouterr().err
