"""The on-the-fly training stream (twins, type curriculum, shrinking defect areas) and the tiny model's fan-in
init that the embedded-default recipe trains with."""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict

import numpy as np
import pytest

from vlm_judge.embedded.synthetic import SyntheticConfig
from vlm_judge.embedded.synthetic.stream import StreamCurriculum, stream_rows, training_stream

SIZE = 96


def _rows(n: int, **curriculum) -> list[dict]:
    config = SyntheticConfig(image_size=SIZE, seed=3)
    return list(itertools.islice(stream_rows(config, StreamCurriculum(**curriculum)), n))


def _changed_share(pair: list[dict]) -> float:
    clean, defective = (np.asarray(r["image"], dtype=np.int16) for r in pair)
    return float((np.abs(defective - clean).max(axis=2) > 24).mean())


def test_rows_are_twins_of_one_scene_with_assessor_labels():
    rows = _rows(40, batch_size=4)
    for clean, defective in zip(rows[::2], rows[1::2], strict=True):
        assert clean["prompt_id"] == defective["prompt_id"] and clean["prompt_id"].startswith("stream-")
        assert clean["defect"] == "none" and defective["defect"] != "none"
        assert clean["image"].size == defective["image"].size == (SIZE, SIZE)
        assert 0 < _changed_share([clean, defective]) < 0.9  # the defect is the only (local) difference
        for row in (clean, defective):
            assert row["label"] == int(row["soft_label"] >= 0.5) and 0 <= row["soft_label"] <= 1
    assert len({r["prompt_id"] for r in rows}) == 20
    # noisy simulated assessors, as in the logs on disk: most defects flagged, most clean images not
    assert np.mean([r["label"] for r in rows[1::2]]) > 0.7 and np.mean([r["label"] for r in rows[::2]]) < 0.3


def test_stream_seed_draws_another_stream_of_the_same_generator():
    default, again, other = _rows(8), _rows(8, stream_seed=0), _rows(8, stream_seed=7)
    assert [np.asarray(r["image"]).tobytes() for r in default] == [np.asarray(r["image"]).tobytes() for r in again]
    assert all(
        not np.array_equal(np.asarray(a["image"]), np.asarray(b["image"])) for a, b in zip(default, other, strict=True)
    )
    assert [r["defect"] == "none" for r in other] == [True, False] * 4  # still clean/defective twins


def test_types_join_one_at_a_time_and_stay():
    rows = _rows(120, batch_size=4, add_every=5, types=("noise_burst", "banding", "warp"))
    steps = [i // 4 for i in range(len(rows))]
    seen = {step: set() for step in steps}
    for step, row in zip(steps, rows, strict=True):
        seen[step].add(row["defect"])
    assert all(seen[s] <= {"none", "noise_burst"} for s in range(5))
    assert all(seen[s] <= {"none", "noise_burst", "banding"} for s in range(5, 10))
    late = set().union(*(seen[s] for s in range(10, 30)))
    assert {"noise_burst", "banding", "warp"} <= late  # the first types stay in the mix


def test_defect_areas_shrink_to_the_configured_range():
    curriculum = StreamCurriculum(area_start=(0.8, 0.9), area_ramp_steps=10, batch_size=2)
    assert curriculum.area_at(0, (0.25, 0.45)) == (0.8, 0.9)
    assert curriculum.area_at(5, (0.25, 0.45)) == pytest.approx((0.525, 0.675))
    assert curriculum.area_at(99, (0.25, 0.45)) == pytest.approx((0.25, 0.45))
    rows = _rows(60, batch_size=2, area_start=(0.85, 0.9), area_ramp_steps=15, types=("noise_burst",))
    early = np.mean([_changed_share(rows[i : i + 2]) for i in range(0, 20, 2)])
    late = np.mean([_changed_share(rows[i : i + 2]) for i in range(40, 60, 2)])
    assert early > 2 * late


def test_stream_is_deterministic_and_restarts_from_its_first_row():
    stream = training_stream({"image_size": SIZE, "seed": 5}, {"batch_size": 4})
    first = list(itertools.islice(iter(stream), 6))
    again = list(itertools.islice(iter(stream), 6))
    for a, b in zip(first, again, strict=True):
        assert a["prompt_id"] == b["prompt_id"] and a["defect"] == b["defect"]
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_size": 3}, "batch_size must be even"),
        ({"types": ("noise_burst", "blotch")}, "stream types must be a non-empty subset"),
        ({"area_start": (0.9, 0.5)}, "area_start must be"),
        ({"add_every": -1}, "must be >= 0"),
    ],
)
def test_curriculum_rejects_bad_settings(fields, message):
    with pytest.raises(ValueError, match=message):
        StreamCurriculum(**fields)


def test_fan_in_init_scales_with_width(tmp_path):
    import torch
    from transformers import Qwen2VLForConditionalGeneration

    from vlm_judge.embedded.tiny_model import TinyModelSpec, make_tiny_model

    plain = Qwen2VLForConditionalGeneration.from_pretrained(make_tiny_model(tmp_path / "plain"))
    scaled = Qwen2VLForConditionalGeneration.from_pretrained(
        make_tiny_model(tmp_path / "scaled", TinyModelSpec(init_gain=1.0))
    )
    for model, expected in ((plain, lambda fan_in: 0.02), (scaled, lambda fan_in: fan_in**-0.5)):
        fc1 = model.model.visual.blocks[0].mlp.fc1.weight  # fan-in = vision embed (64)
        down = model.model.language_model.layers[0].mlp.down_proj.weight  # fan-in = text intermediate (512)
        for weight in (fc1, down):
            assert float(weight.std()) == pytest.approx(expected(weight.shape[1]), rel=0.1)
    # the token embeddings (tied to the LM head) keep their init in both
    assert torch.equal(plain.model.language_model.embed_tokens.weight, scaled.model.language_model.embed_tokens.weight)


def test_a_model_built_before_a_spec_field_existed_is_reused(tmp_path):
    from vlm_judge.embedded import tiny_model_dir
    from vlm_judge.embedded.tiny_model import TinyModelSpec, make_tiny_model

    folder = make_tiny_model(tmp_path / "old")
    spec_file = folder / "tiny_model_spec.json"
    old = {k: v for k, v in asdict(TinyModelSpec()).items() if k != "init_gain"}
    spec_file.write_text(json.dumps(old))
    assert tiny_model_dir({}, str(folder)) == folder
    with pytest.raises(ValueError, match="holds a different model"):
        tiny_model_dir({"init_gain": 1.0}, str(folder))


def test_type_weights_tilt_the_defect_mix_and_reject_unknown_types():
    choices = ["noise_burst", "banding", "seam", "smear"]
    rng = np.random.default_rng(0)
    weighted = StreamCurriculum(type_weights={"banding": 3.0, "noise_burst": 0.5})
    drawn = [weighted.draw_type(choices, rng) for _ in range(4000)]
    share = {t: drawn.count(t) / len(drawn) for t in choices}
    # weights 0.5 / 3 / 1 / 1 of a total 5.5
    assert share["banding"] == pytest.approx(3 / 5.5, abs=0.03)
    assert share["noise_burst"] == pytest.approx(0.5 / 5.5, abs=0.02)
    assert share["seam"] == pytest.approx(1 / 5.5, abs=0.03)
    uniform = [StreamCurriculum().draw_type(choices, rng) for _ in range(4000)]
    assert uniform.count("banding") / 4000 == pytest.approx(0.25, abs=0.03)
    with pytest.raises(ValueError, match="type_weights .*'blurry'"):
        StreamCurriculum(type_weights={"blurry": 2.0})
    with pytest.raises(ValueError, match="weights > 0"):
        StreamCurriculum(type_weights={"seam": 0.0})
