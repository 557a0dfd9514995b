"""The in-process judge (JudgeSpec base_url "local", vlm_judge.judges.LocalJudge) on the tiny model: the p_defect
of modeling.score_images exactly, a bad image as a named ImageError result, and eval.compare / vlm_judge.score
evaluating a checkpoint folder without a server."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from eval import compare
from vlm_judge.client import make_judge
from vlm_judge.judges import EndpointError, JudgeSpec, JudgeSpecError, LocalJudge, probe
from vlm_judge.modeling import load_model, load_processor, score_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VERBALIZED = Path(__file__).resolve().parent.parent / "prompts" / "defect_judge_verbalized.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from vlm_judge.embedded.synthetic import generate_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic_dataset(out, num_prompts=8, num_systems=2, image_size=112, seed=5)
    return out


def _images(dataset: Path) -> list[Path]:
    return [dataset / name for name in pd.read_csv(dataset / "labels.csv")["image"]]


def test_local_judge_scores_exactly_like_score_images_and_names_a_bad_image(
    tiny_model_dir, dataset, tmp_path
):
    images = _images(dataset)[:7]
    spec = JudgeSpec(base_url="local", model=str(tiny_model_dir), max_concurrency=3)
    judge = make_judge(spec)
    assert isinstance(judge, LocalJudge)
    reference = score_images(load_model(tiny_model_dir), load_processor(tiny_model_dir), images, batch_size=3)

    seen = []
    results = judge.score_batch(images, on_result=lambda i, r: seen.append(i))
    assert [r.p_defect for r in results] == reference  # the same forward passes, bit for bit
    assert sorted(seen) == list(range(7)) and all(r.ok and r.attempts == 1 for r in results)
    assert [r.image for r in results] == [str(p) for p in images]

    # A truncated file is a named per-item failure; the good images around it keep their batches and scores.
    broken = tmp_path / "broken.png"
    broken.write_bytes(images[0].read_bytes()[:200])
    mixed = [images[0], broken, *images[1:]]
    results = judge.score_batch(mixed, names=[f"n{i}" for i in range(len(mixed))])
    bad = results[1]
    assert not bad.ok and bad.error_kind == "ImageError" and bad.image == "n1" and bad.attempts == 0
    assert "n1" in bad.error and bad.error.startswith("ImageError: ")
    assert [r.p_defect for r in results[:1] + results[2:]] == reference


def test_local_spec_rules_and_probe(tiny_model_dir, tmp_path):
    with pytest.raises(JudgeSpecError, match="logprobs-mode prompt"):
        JudgeSpec(base_url="local", model=str(tiny_model_dir), prompt=VERBALIZED)
    with pytest.raises(JudgeSpecError, match="logprobs-mode prompt and endpoint 'chat'"):
        JudgeSpec(base_url="local", model=str(tiny_model_dir), endpoint="classify")
    (served,) = probe(JudgeSpec(base_url="local", model=str(tiny_model_dir)))
    assert served["root"] == str(Path(tiny_model_dir).resolve())
    missing = JudgeSpec(base_url="local", model=str(tmp_path / "nothing"))
    with pytest.raises(EndpointError, match="is not a model folder"):
        probe(missing)
    with pytest.raises(JudgeSpecError, match="is not a model folder"):
        LocalJudge(missing)
    # The weight files are part of the cache key: a folder retrained in place is a new judge.
    before = JudgeSpec(base_url="local", model=str(tiny_model_dir)).config_hash()
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in Path(tiny_model_dir).iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    assert JudgeSpec(base_url="local", model=str(copy)).config_hash() != before


def test_compare_evaluates_a_checkpoint_folder_in_process(tiny_model_dir, dataset, tmp_path):
    config = tmp_path / "checkpoint.yaml"
    config.write_text(json.dumps({"name": "checkpoint", "base_url": "local", "model": str(tiny_model_dir)}))
    out = tmp_path / "report"
    args = ["--dataset", str(dataset), "--judges", str(config), "--output", str(out), "--split", "all"]
    assert compare.main([*args, "--no-progress", "--bootstrap", "50", "--min-side", "64"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    judge = metrics["judges"]["checkpoint"]
    assert judge["failures"]["n_failed"] == 0 and judge["failures"]["n_scored"] == 16
    preds = pd.read_csv(out / "predictions.csv")
    by_image = dict(zip(preds["image"], preds["p_defect"], strict=True))
    images = _images(dataset)
    reference = score_images(load_model(tiny_model_dir), load_processor(tiny_model_dir), images, batch_size=8)
    # compare's item order sets the batches, so equal up to float32 reduction order
    assert [by_image[str(p.relative_to(dataset))] for p in images] == pytest.approx(reference, abs=1e-5)


def test_score_cli_scores_a_checkpoint_folder_in_process(tiny_model_dir, dataset, tmp_path):
    from vlm_judge import score

    output = tmp_path / "preds.csv"
    argv = ["--base-url", "local", "--model", str(tiny_model_dir), "--input", str(dataset / "images")]
    assert score.main([*argv, "--output", str(output), "--no-progress"]) == 0
    preds = pd.read_csv(output)
    assert len(preds) == 16 and preds["p_defect"].between(0, 1).all() and preds["error"].isna().all()
