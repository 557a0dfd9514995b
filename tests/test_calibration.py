"""Temperature scaling of the judge's readout (vlm_judge.calibration): the fit on known data, its agreement with the
protocol's Yes/No rule, the fold into a real tiny Qwen2-VL, and named errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlm_judge.calibration import final_norm, fit_temperature, fold_temperature, readout_log_odds
from vlm_judge.modeling import build_judge_inputs, load_model, load_processor
from vlm_judge.protocol import p_defect_from_logits

SIDE = 112
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_fit_recovers_the_temperature_of_an_overconfident_readout():
    rng = np.random.default_rng(0)
    true_log_odds = rng.normal(0.0, 2.0, size=6000)
    labels = (rng.random(6000) < 1 / (1 + np.exp(-true_log_odds))).astype(float)
    # The readout's log-odds are 2.5x too large: a Yes logit of 2.5 z against a No logit of 0.
    defect, clean = (2.5 * true_log_odds)[:, None], np.zeros((6000, 1))
    fit = fit_temperature(defect, clean, labels)
    assert fit.temperature == pytest.approx(2.5, rel=0.08)
    assert fit.nll_after < fit.nll_before and fit.rows == 6000
    # A calibrated readout is left alone; a readout without signal runs to the end of the search range.
    assert fit_temperature(true_log_odds[:, None], clean, labels).temperature == pytest.approx(1.0, abs=0.08)
    assert not fit.at_search_bound
    noise = fit_temperature(rng.normal(0.0, 3.0, size=(6000, 1)), clean, labels)
    assert noise.at_search_bound and noise.temperature > 19


def test_readout_merges_answer_variants_like_the_protocol_rule():
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, size=(50, 6))
    defect_ids, clean_ids = [0, 2], [1, 4, 5]
    for temperature in (1.0, 2.0, 0.5):
        p = p_defect_from_logits(torch.tensor(logits / temperature), defect_ids, clean_ids).double().numpy()
        z = readout_log_odds(logits[:, defect_ids], logits[:, clean_ids], temperature)
        assert 1 / (1 + np.exp(-z)) == pytest.approx(p, abs=1e-6)


@pytest.mark.parametrize(
    ("defect", "clean", "targets", "message"),
    [
        (np.zeros((3, 1)), np.zeros((2, 1)), [0, 1, 0], "one target per row"),
        (np.zeros((0, 1)), np.zeros((0, 1)), [], "at least one row"),
        (np.zeros(3), np.zeros(3), [0, 1, 0], r"\[rows, variants\]"),
        (np.array([[np.nan], [0.0]]), np.zeros((2, 1)), [0, 1], "NaN or infinite"),
        (np.zeros((2, 1)), np.zeros((2, 1)), [0, 2], r"targets must lie in \[0, 1\]"),
    ],
)
def test_fit_names_bad_input(defect, clean, targets, message):
    with pytest.raises(ValueError, match=message):
        fit_temperature(defect, clean, targets)


def test_folding_divides_every_answer_logit_of_the_tiny_model(tiny_model_dir):
    from PIL import Image

    processor = load_processor(tiny_model_dir, min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE)
    model = load_model(tiny_model_dir, dtype="float32").eval()
    images = [Image.new("RGB", (SIDE, SIDE), color) for color in ((200, 30, 30), (20, 160, 90))]
    inputs = build_judge_inputs(processor, images)
    with torch.no_grad():
        before = model(**inputs).logits[:, -1]
        fold_temperature(model, 2.5)
        after = model(**inputs).logits[:, -1]
    assert torch.allclose(after, before / 2.5, atol=1e-5)
    assert before.abs().max() > 1e-3  # the comparison is not between zeros

    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive finite"):
            fold_temperature(model, bad)
    with pytest.raises(ValueError, match="cannot fold a temperature into Linear"):
        final_norm(torch.nn.Linear(2, 2))
