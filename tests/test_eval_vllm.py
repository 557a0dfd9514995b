"""eval.compare in logprob mode against the real vLLM server (CPU) serving the tiny Qwen2-VL.

This is the issue's "done when" in miniature: the shipped baselines/finetuned.yaml and baselines/base-tiny.yaml
run on a synthetic dataset through one server, the full report is written, GPT-5.1 shows as skipped without a
key. One server for the module (start 40-110 s).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from eval import compare

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from vlm_judge.embedded.synthetic import generate_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic-vllm") / "data"
    # 12 prompts x 2 systems at 112 px: 8x8 patches -> 16 visual tokens, seconds per pass on CPU.
    generate_synthetic_dataset(out, num_prompts=12, num_systems=2, image_size=112, seed=5)
    return out


@pytest.fixture(scope="module")
def base_url(tiny_model_dir):
    from vlm_judge.serving.judge_server import running_judge_server

    with running_judge_server(tiny_model_dir, served_model_name="base-tiny") as url:
        yield url


def test_compare_logprob_judges_on_real_vllm(base_url, dataset, tmp_path, monkeypatch):
    # Both shipped logprob configs point at the one tiny server: the "fine-tuned" slot and the prompted base.
    monkeypatch.setenv("JUDGE_BASE_URL", base_url)
    monkeypatch.setenv("JUDGE_MODEL", "base-tiny")
    monkeypatch.setenv("BASE_JUDGE_BASE_URL", base_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("QWEN3_BASE_URL", raising=False)
    out = tmp_path / "report"
    args = ["--dataset", str(dataset), "--split", "all", "--output", str(out)]
    args += ["--min-side", "64", "--bootstrap", "100", "--no-progress", "--judges"]
    args += [
        str(ROOT / f"baselines/{name}.yaml") for name in ("finetuned", "base-tiny", "gpt-5.1", "qwen3-30b")
    ]
    assert compare.main(args) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert {s["name"]: s["reason"] for s in metrics["skipped"]} == {
        "gpt-5.1": "skipped: OPENAI_API_KEY not set",
        "qwen3-30b": "skipped: QWEN3_BASE_URL not set",
    }
    n_images = metrics["dataset"]["n_images"]
    assert n_images == 24
    for name in ("finetuned", "base-tiny"):
        judge = metrics["judges"][name]
        assert judge["failures"]["n_failed"] == 0, judge["failures"]["errors"]
        assert judge["judge"]["mode"] == "logprobs" and judge["quality"]["n"] == n_images
        assert judge["latency"]["latency_p50_ms"] > 0
    preds = pd.read_csv(out / "predictions.csv")
    assert preds["p_defect"].between(0, 1).all() and preds["error"].isna().all()
    # Same server, same prompt, same client path: the two judges must give the same numbers.
    wide = preds.pivot(index="image", columns="judge", values="p_defect")
    assert (wide["finetuned"] - wide["base-tiny"]).abs().max() < 1e-6
    report = (out / "report.md").read_text()
    assert "OPENAI_API_KEY not set" in report and "macro-accuracy" in report
    for png in ("roc.png", "pr.png", "reliability.png", "histograms.png"):
        assert (out / png).stat().st_size > 1000

    # A finished judge is not queried again: the second run is served from the cache alone.
    assert compare.main(args) == 0
    again = json.loads((out / "metrics.json").read_text())
    for name in ("finetuned", "base-tiny"):
        assert again["judges"][name]["failures"]["n_cached"] == n_images
        assert again["judges"][name]["quality"]["metrics"] == metrics["judges"][name]["quality"]["metrics"]


def test_sbs_known_verdicts_on_real_vllm(base_url, tmp_path, monkeypatch, make_renders):
    """python -m eval.sbs through the real server. The answer is known by construction: the pictures the judge
    scored lowest become system A and the highest system B (B worse on every prompt -> "A better"); A's pictures
    re-encoded (same pixels, other bytes) are system A-again (-> no significant difference, judged once)."""
    import shutil

    from PIL import Image

    from eval import sbs as sbs_cli

    monkeypatch.setenv("JUDGE_BASE_URL", base_url)
    monkeypatch.setenv("JUDGE_MODEL", "base-tiny")
    n = 10
    layout = {"x": {f"p{i}": 100 + i for i in range(n)}, "y": {f"p{i}": 200 + i for i in range(n)}}
    pool = make_renders(tmp_path / "pool", layout, size=112)
    cache = tmp_path / "cache"

    def run(dataset: Path, out: Path, *extra: str) -> int:
        return sbs_cli.main(
            [
                "--dataset",
                str(dataset),
                "--judge",
                str(ROOT / "baselines/finetuned.yaml"),
                "--output",
                str(out),
            ]
            + ["--cache-dir", str(cache), "--min-side", "64", "--bootstrap", "200", "--no-progress", *extra]
        )

    assert run(pool, tmp_path / "first") == 0
    first = pd.read_csv(tmp_path / "first" / "scores.csv")
    assert len(first) == 2 * n and first["error"].isna().all() and first["p_defect"].between(0, 1).all()
    ranked = first.sort_values("p_defect").reset_index(drop=True)
    assert ranked["p_defect"].iloc[n - 1] < ranked["p_defect"].iloc[n]  # a strict split into low and high

    known = tmp_path / "known"
    for system in ("A", "B", "A-again"):
        (known / system).mkdir(parents=True)
    for i in range(n):
        low, high = pool / ranked["image"].iloc[i], pool / ranked["image"].iloc[n + i]
        shutil.copy(low, known / "A" / f"q{i}.png")
        shutil.copy(high, known / "B" / f"q{i}.png")
        Image.open(low).save(known / "A-again" / f"q{i}.png", compress_level=1)
    assert run(known, tmp_path / "known-report", "--baseline", "A") == 0
    report = json.loads((tmp_path / "known-report" / "sbs.json").read_text())
    pairs = {(p["system_a"], p["system_b"]): p for p in report["pairs"]}
    a_b = pairs[("A", "B")]
    assert a_b["judge"]["verdict"] == "A better" and a_b["b_wins"] == 0 and a_b["a_wins"] == n
    assert a_b["judge"]["mean_diff"] < 0 and a_b["mean_diff_ci"][1] < 0
    same = pairs[("A", "A-again")]
    assert same["judge"]["verdict"] == "no significant difference" and same["ties"] == n
    # Every picture was judged once in all: 2n requests for the 2n pictures behind 3n rows.
    assert report["dataset"]["n_pictures_judged"] == 2 * n and report["settings"]["n_cached"] == 2 * n
    assert len((cache / "finetuned.jsonl").read_text().splitlines()) == 2 * n
