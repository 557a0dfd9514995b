"""python -m eval.compare end to end against the fake OpenAI-compatible server: verbalized and logprob modes,
malformed answers, refusals, 429/500, skipped judges, the results cache, kill-and-resume, real photographs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer, Reply, image_sha256, write_judge_config
from PIL import Image

from eval import compare
from vlm_judge.images import file_sha256
from vlm_judge.judges import JudgeSpec, JudgeSpecError, JudgeUnavailable

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "prompts"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from vlm_judge.embedded.synthetic import generate_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic_dataset(out, num_prompts=20, num_systems=3, image_size=96, seed=3)
    return out


def _labels(root: Path) -> dict[str, int]:
    """sha256 -> hard label of every image in a canonical dataset."""
    table = pd.read_csv(root / "labels.csv")
    if "label" not in table.columns:
        table["label"] = (table["defect_votes"] / table["total_votes"] >= 0.5).astype(int)
    return {
        file_sha256(root / img): int(lab) for img, lab in zip(table["image"], table["label"], strict=True)
    }


def _informed(labels: dict[str, int], mode: str = "verbalized"):
    """A default reply that knows the labels (with a deterministic jitter), so metrics are meaningful."""

    def reply(body):
        sha = image_sha256(body)
        label = labels.get(sha, 0)
        jitter = (int(sha[:4], 16) % 100) / 400 if sha else 0.0
        p = 0.7 + jitter if label else 0.05 + jitter
        if mode == "logprobs":
            return Reply.logprobs({"Yes": float(np.log(p)), "No": float(np.log(1 - p)), "The": -6.0})
        return Reply.verbalized(round(p, 3), ["smear"] if label else [])

    return reply


def _config(tmp_path: Path, name: str, **fields) -> Path:
    return write_judge_config(tmp_path, name, **fields)


def _run(args: list[str]) -> int:
    return compare.main([*args, "--no-progress", "--bootstrap", "100", "--min-side", "64"])


# ---------------------------------------------------------------------------------------------- configs


def test_bad_judge_configs_are_named_errors(tmp_path, dataset, capsys):
    bad = {
        "unknown.yaml": "name: x\nmodel: m\nbase_url: http://x\ncolour: red\n",
        "nomodel.yaml": "name: x\nbase_url: http://x\n",
        "noname.yaml": "model: m\nbase_url: http://x\n",
        "badtype.yaml": "name: x\nmodel: m\nbase_url: http://x\ntop_logprobs: many\n",
        "noprompt.yaml": "name: x\nmodel: m\nbase_url: http://x\nprompt: prompts/missing.yaml\n",
        "notyaml.yaml": "name: [x\n",
    }
    expected = ["colour", "'model'", "'name'", "top_logprobs", "missing.yaml", "not valid YAML"]
    for (file, text), needle in zip(bad.items(), expected, strict=True):
        path = tmp_path / file
        path.write_text(text)
        with pytest.raises(JudgeSpecError, match=needle):
            JudgeSpec.from_yaml(path)
    code = _run(
        [
            "--dataset",
            str(dataset),
            "--judges",
            str(tmp_path / "unknown.yaml"),
            "--output",
            str(tmp_path / "r"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "colour" in err and "Traceback" not in err
    code = _run(
        [
            "--dataset",
            str(tmp_path / "nope"),
            "--judges",
            str(ROOT / "baselines/gpt-5.1.yaml"),
            "--output",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_shipped_baselines_load():
    for path in sorted((ROOT / "baselines").glob("*.yaml")):
        config = JudgeSpec.from_yaml(path)
        assert config.name == path.stem
    assert JudgeSpec.from_yaml(ROOT / "baselines/gpt-5.1.yaml").mode == "verbalized"
    for name in ("finetuned", "base-tiny", "qwen3-30b"):
        assert JudgeSpec.from_yaml(ROOT / f"baselines/{name}.yaml").mode == "logprobs"


def test_resolution_from_environment():
    gpt = JudgeSpec.from_yaml(ROOT / "baselines/gpt-5.1.yaml")
    with pytest.raises(JudgeUnavailable, match="OPENAI_API_KEY not set"):
        gpt.resolve(env={})
    resolved = gpt.resolve(env={"OPENAI_API_KEY": "sk-test"})
    assert resolved.base_url == "https://api.openai.com/v1" and resolved.model == "gpt-5.1"
    qwen = JudgeSpec.from_yaml(ROOT / "baselines/qwen3-30b.yaml")
    with pytest.raises(JudgeUnavailable, match="QWEN3_BASE_URL not set"):
        qwen.resolve(env={})
    qwen_ok = qwen.resolve(env={"QWEN3_BASE_URL": "http://127.0.0.1:9/v1/"})
    assert qwen_ok.base_url == "http://127.0.0.1:9/v1" and qwen_ok.api_key is None
    tuned = JudgeSpec.from_yaml(ROOT / "baselines/finetuned.yaml")
    assert tuned.resolve(env={}).base_url == "http://127.0.0.1:8000/v1"
    # The cache key follows what changes answers, not where the server runs.
    a = tuned.resolve(env={"JUDGE_BASE_URL": "http://127.0.0.1:1/v1"})
    b = tuned.resolve(env={"JUDGE_BASE_URL": "http://127.0.0.1:2/v1", "JUDGE_REVISION": "ckpt-2"})
    assert a.config_hash() == tuned.resolve(env={}).config_hash() != b.config_hash()


# ---------------------------------------------------------------------------------------------- end to end


def test_verbalized_judge_with_faults_and_skips(tmp_path, dataset, monkeypatch):
    labels = _labels(dataset)
    table = pd.read_csv(dataset / "labels.csv")
    validation = {file_sha256(dataset / img) for img in table.loc[table["split"] == "validation", "image"]}
    shas = sorted(set(labels) - validation)  # faults outside the validation split: the threshold needs scores
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    with FakeOpenAIServer(models=["fake-judge"], default=_informed(labels), api_key="sk-fake") as server:
        # Faults spread over the train and test splits.
        faults = {
            "malformed": Reply.text('{"defect_probability": 0.7, "defects": ['),
            "prose": Reply.text("The image looks fine to me."),
            "refusal": Reply.refusal(),
            "out_of_range": Reply.verbalized(1.7),
            "server_error": Reply.error(500),
        }
        scripted = {}
        for i, (kind, reply) in enumerate(faults.items()):
            for sha in shas[i::12]:
                server.script[sha] = [reply]
                scripted[sha] = kind
        for sha in shas[5::12]:
            server.script[sha] = [
                Reply.error(429, retry_after=0),
                Reply.verbalized(0.9 if labels[sha] else 0.1),
            ]
            scripted[sha] = "429_then_ok"

        fake = _config(
            tmp_path,
            "fake-gpt",
            base_url=server.base_url,
            api_key_env="FAKE_KEY",
            prompt="prompts/defect_judge_verbalized.yaml",
        )
        unreachable = _config(tmp_path, "dead", base_url="http://127.0.0.1:9/v1")
        wrong_model = _config(
            tmp_path, "wrong-model", base_url=server.base_url, api_key_env="FAKE_KEY", model="nope"
        )
        out = tmp_path / "report"
        args = [
            "--dataset",
            str(dataset),
            "--split",
            "all",
            "--output",
            str(out),
            "--judges",
            str(fake),
            str(unreachable),
            str(wrong_model),
            str(ROOT / "baselines/gpt-5.1.yaml"),
        ]
        assert _run(args) == 0
        first_requests = sum(server.received.values())

        metrics = json.loads((out / "metrics.json").read_text())
        skipped = {s["name"]: s["reason"] for s in metrics["skipped"]}
        assert skipped["gpt-5.1"] == "skipped: OPENAI_API_KEY not set"
        assert skipped["dead"].startswith("skipped: endpoint http://127.0.0.1:9/v1 unreachable")
        assert "'nope' is not served" in skipped["wrong-model"]
        assert list(metrics["judges"]) == ["fake-gpt"]

        preds = pd.read_csv(out / "predictions.csv")
        preds["sha"] = [file_sha256(dataset / img) for img in preds["image"]]
        assert len(preds) == len(labels)  # --split all: every image once
        for sha, kind in scripted.items():
            row = preds[preds["sha"] == sha].iloc[0]
            if kind == "429_then_ok":
                assert row["p_defect"] in (0.9, 0.1) and pd.isna(row["error"]) and row["attempts"] >= 2
            else:
                assert pd.isna(row["p_defect"]) and isinstance(row["error"], str) and row["error"], kind
        assert server.received[shas[4]] > 1  # 500s were retried by the client
        assert server.received[shas[0]] == 1  # a malformed answer is not retried

        judge = metrics["judges"]["fake-gpt"]
        n_faulty = sum(kind != "429_then_ok" for kind in scripted.values())
        assert judge["failures"]["n_failed"] == n_faulty
        assert judge["failures"]["failure_rate"] == pytest.approx(n_faulty / len(labels))
        quality = judge["quality"]
        assert quality["n"] == len(labels) - n_faulty
        assert quality["metrics"]["roc_auc"] > 0.95  # the fake judge knows the labels
        assert 0 < quality["threshold_val"] < 1 and "in-sample" in quality["threshold_note"]
        assert judge["sbs"]["summary"]["n_pairs"] == 3
        report = (out / "report.md").read_text()
        for needle in (
            "ROC-AUC",
            "macro-accuracy",
            "OPENAI_API_KEY not set",
            "unreachable",
            "Wilcoxon",
            "fake-gpt",
        ):
            assert needle in report
        for png in ("roc.png", "pr.png", "reliability.png", "histograms.png"):
            assert Image.open(out / png).size[0] > 100

        # A finished judge is not queried again; --retry-errors re-asks only the failed items.
        assert _run(args) == 0
        assert sum(server.received.values()) == first_requests
        again = json.loads((out / "metrics.json").read_text())["judges"]["fake-gpt"]
        assert again["quality"]["metrics"] == quality["metrics"] and again["failures"]["n_cached"] == len(
            labels
        )
        server.script.clear()
        assert _run([*args, "--retry-errors"]) == 0
        assert sum(server.received.values()) == first_requests + n_faulty
        assert (
            json.loads((out / "metrics.json").read_text())["judges"]["fake-gpt"]["failures"]["n_failed"] == 0
        )


def test_logprob_judge_and_default_test_split(tmp_path, dataset):
    labels = _labels(dataset)
    with FakeOpenAIServer(models=["fake-judge"], default=_informed(labels, "logprobs")) as server:
        config = _config(tmp_path, "fake-vllm", base_url=server.base_url, prompt="prompts/defect_judge.yaml")
        out = tmp_path / "report"
        assert _run(["--dataset", str(dataset), "--judges", str(config), "--output", str(out)]) == 0
        body = server.bodies[0]
        assert body["logprobs"] is True and body["top_logprobs"] == 20
    metrics = json.loads((out / "metrics.json").read_text())
    frame = pd.read_csv(dataset / "labels.csv")
    n_test = int((frame["split"] == "test").sum())
    n_val = int((frame["split"] == "validation").sum())
    assert metrics["dataset"]["n_images"] == n_test and metrics["dataset"]["n_threshold_images"] == n_val
    assert len(server.received) == n_test + n_val  # the test split plus validation for the threshold
    quality = metrics["judges"]["fake-vllm"]["quality"]
    assert quality["n"] == n_test and "in-sample" not in quality["threshold_note"]
    # Per defect type: that type against the clean images, with a CI like every quality metric.
    kinds = set(frame.loc[(frame["split"] == "test") & (frame["defect"] != "none"), "defect"])
    assert {k for k in quality["metrics"] if k.startswith("roc_auc_")} == {f"roc_auc_{k}" for k in kinds}
    assert set(quality["ci"]) == set(quality["metrics"])
    assert "ROC-AUC per defect type" in (out / "report.md").read_text()
    preds = pd.read_csv(out / "predictions.csv")
    assert set(preds["split"]) == {"test", "validation"} and preds["p_defect"].between(0, 1).all()


def test_limit_takes_whole_prompts(dataset):
    frame, _ = compare.load_items(dataset, min_side=64, seed=0)
    limited = compare.limit_prompts(frame, 10, seed=0)
    assert 0 < len(limited) <= 10
    assert (
        limited.groupby("prompt_id").size()
        == frame.groupby("prompt_id").size()[limited["prompt_id"].unique()]
    ).all()
    assert limited.equals(compare.limit_prompts(frame, 10, seed=0))


# ---------------------------------------------------------------------------------------------- kill and resume


def test_kill_and_resume_queries_no_item_twice_and_loses_none(tmp_path, dataset):
    labels = _labels(dataset)
    answered_before_kill = 17
    with FakeOpenAIServer(
        models=["fake-judge"], default=_informed(labels), hold_after=answered_before_kill
    ) as server:
        config = _config(
            tmp_path,
            "fake-gpt",
            base_url=server.base_url,
            max_concurrency=3,
            prompt="prompts/defect_judge_verbalized.yaml",
        )
        out = tmp_path / "report"
        cmd = [
            sys.executable,
            "-m",
            "eval.compare",
            "--dataset",
            str(dataset),
            "--split",
            "all",
            "--judges",
            str(config),
            "--output",
            str(out),
            "--bootstrap",
            "50",
            "--no-progress",
            "--min-side",
            "64",
        ]
        cache_file = out / "cache" / "fake-gpt.jsonl"
        killed_in_flight = server.start_and_kill(cmd, ROOT, cache_file, answered_before_kill)
        assert not (out / "report.md").exists()

        assert compare.main(cmd[3:]) == 0  # resume

    # None queried twice: every image was answered exactly once over both runs ...
    assert set(server.answered) == set(labels) and set(server.answered.values()) == {1}
    # ... only the requests cut off by the kill were sent again (they never got an answer).
    assert sum(server.received.values()) == len(labels) + killed_in_flight
    # None lost: one cache line per image, every prediction present.
    records = [json.loads(line) for line in cache_file.read_text().splitlines()]
    assert len(records) == len({r["key"] for r in records}) == len(labels)
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == len(labels) and preds["p_defect"].notna().all()
    assert int(preds["cached"].sum()) == answered_before_kill


# ---------------------------------------------------------------------------------------------- real photos


def _photo_dataset(root: Path) -> Path:
    """A canonical dataset of real photographs: crops of scikit-learn's two sample photos (JPEG), in several
    sizes, modes and formats, with vote-based labels and no split column."""
    import sklearn.datasets

    photos = Path(sklearn.datasets.__file__).parent / "images"
    images = root / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for p in range(10):
        for s, system in enumerate(("cam-a", "cam-b")):
            source = Image.open(photos / ("china.jpg" if (p + s) % 2 else "flower.jpg"))
            w, h = rng.integers(260, 420), rng.integers(260, 420)
            x, y = rng.integers(0, source.width - w), rng.integers(0, source.height - h)
            crop = source.crop((x, y, x + w, y + h))
            name = f"images/{p:02d}_{system}." + ("jpg" if s == 0 else "png")
            if p % 3 == 0:
                crop = crop.convert("L")  # grayscale photo
            crop.save(root / name)
            votes = int(rng.integers(0, 4))
            rows.append(
                {
                    "image": name,
                    "prompt_id": f"photo{p}",
                    "system": system,
                    "defect_votes": votes,
                    "total_votes": 3,
                }
            )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def test_runs_on_real_photographs(tmp_path):
    data = _photo_dataset(tmp_path / "photos")
    with FakeOpenAIServer(models=["fake-judge"], default=_informed(_labels(data))) as server:
        config = _config(
            tmp_path, "fake-gpt", base_url=server.base_url, prompt="prompts/defect_judge_verbalized.yaml"
        )
        out = tmp_path / "report"
        assert (
            _run(["--dataset", str(data), "--split", "all", "--judges", str(config), "--output", str(out)])
            == 0
        )
    metrics = json.loads((out / "metrics.json").read_text())
    judge = metrics["judges"]["fake-gpt"]
    assert judge["failures"]["n_failed"] == 0 and judge["quality"]["n"] == 20
    assert judge["quality"]["metrics"]["rmse_soft"] is not None
    assert (out / "report.md").read_text().count("fake-gpt") >= 3
