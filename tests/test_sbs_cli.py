"""python -m eval.sbs end to end against the fake OpenAI-compatible server: verdicts on data whose answer is
known by construction, the assessors' verdict beside the judge's, pictures shared by two systems judged once,
drift against the baseline, kill-and-resume, one cache with eval.compare, and every bad input as exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer, Reply, image_sha256, write_judge_config

from eval import compare
from eval import sbs as sbs_cli
from vlm_judge.images import file_sha256

ROOT = Path(__file__).resolve().parent.parent
N_PROMPTS = 20


def _config(tmp_path: Path, base_url: str, name: str = "fake-judge") -> Path:
    return write_judge_config(
        tmp_path,
        name,
        base_url=base_url,
        prompt="prompts/defect_judge_verbalized.yaml",
        max_concurrency=3,
        max_retries=1,
    )


@pytest.fixture
def renders(tmp_path, make_renders):
    """Four systems on 20 prompts. v1 and v1-twin draw p_defect from the same range (0.2-0.3), v2 from 0.6-0.7;
    v1-same holds v1's pictures re-encoded (same pixels, other bytes). Returns (root, {sha: p})."""
    prompts = [f"p{i:02d}" for i in range(N_PROMPTS)]
    layout = {
        "v1": {p: 1000 + i for i, p in enumerate(prompts)},
        "v1-same": {p: 1000 + i for i, p in enumerate(prompts)},
        "v1-twin": {p: 2000 + i for i, p in enumerate(prompts)},
        "v2": {p: 3000 + i for i, p in enumerate(prompts)},
    }
    root = make_renders(tmp_path / "renders", layout, compress={"v1-same": 1})
    rng = np.random.default_rng(7)
    base = {"v1": 0.2, "v1-twin": 0.2, "v2": 0.6}
    scores = {}
    for system, offset in base.items():
        for p in prompts:
            scores[file_sha256(root / system / f"{p}.png")] = round(offset + 0.1 * rng.random(), 4)
    return root, scores


def _server(scores: dict[str, float], **kwargs) -> FakeOpenAIServer:
    return FakeOpenAIServer(
        models=["fake-judge"], default=lambda body: Reply.verbalized(scores.get(image_sha256(body), 0.99)), **kwargs
    )


def _args(dataset: Path, config: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        str(dataset),
        "--judge",
        str(config),
        "--output",
        str(out),
        "--min-side",
        "64",
        "--bootstrap",
        "200",
        "--no-progress",
        *extra,
    ]


def _pair(report: dict, a: str, b: str) -> dict:
    return next(p for p in report["pairs"] if (p["system_a"], p["system_b"]) == (a, b))


def test_known_verdicts_shared_pictures_and_drift(tmp_path, renders, capsys):
    root, scores = renders
    out = tmp_path / "report"
    with _server(scores) as server:
        code = sbs_cli.main(_args(root, _config(tmp_path, server.base_url), out, "--baseline", "v1"))
        assert code == 0, capsys.readouterr().err
        received = dict(server.received)
    report = json.loads((out / "sbs.json").read_text())

    # Shared pictures: v1-same's rows are kept, noted, and never sent (v1's files are, once each).
    assert report["dataset"]["n_images"] == 4 * N_PROMPTS
    assert report["dataset"]["n_pictures_judged"] == 3 * N_PROMPTS
    assert len(report["dataset"]["shared_images"]) == N_PROMPTS
    assert set(received) == set(scores) and set(received.values()) == {1}
    table = pd.read_csv(out / "scores.csv")
    assert table.columns.tolist() == ["image", "system", "prompt_id", "p_defect", "error", "method"]
    assert len(table) == 4 * N_PROMPTS and table["p_defect"].notna().all()
    wide = table.pivot(index="prompt_id", columns="system", values="p_defect")
    assert (wide["v1"] == wide["v1-same"]).all()

    # Verdicts: v2 scores higher on every prompt -> A (v1) better; identical pictures -> no difference.
    v1_v2 = _pair(report, "v1", "v2")
    assert v1_v2["judge"]["verdict"] == "A better" and v1_v2["judge"]["better"] == "v1"
    assert (v1_v2["a_wins"], v1_v2["ties"], v1_v2["b_wins"]) == (N_PROMPTS, 0, 0)
    expected = wide["v1"].mean() - wide["v2"].mean()
    assert v1_v2["judge"]["mean_diff"] == pytest.approx(expected)
    assert v1_v2["mean_p_defect_a"] == pytest.approx(wide["v1"].mean())
    lo, hi = v1_v2["mean_diff_ci"]
    assert lo < expected < hi < 0
    assert (v1_v2["defect_rate_a"], v1_v2["defect_rate_b"]) == (0.0, 1.0)  # threshold 0.5: none / all
    assert report["settings"]["threshold"] == 0.5 and "default" in report["settings"]["threshold_source"]
    # A huge, consistent effect needs only the minimum number of prompts.
    assert 6 <= v1_v2["prompts_for_80_power"] < N_PROMPTS
    same = _pair(report, "v1", "v1-same")
    assert same["judge"]["verdict"] == "no significant difference"
    assert (same["ties"], same["judge"]["mean_diff"], same["judge"]["p_value"]) == (N_PROMPTS, 0.0, 1.0)
    assert same["prompts_for_80_power"] is None and same["minimum_detectable_effect"] is None
    twin = _pair(report, "v1", "v1-twin")
    assert twin["judge"]["verdict"] == "no significant difference"
    # The twin's effect is small: detecting it needs more prompts than given, and the smallest detectable
    # effect with 20 prompts is larger than the one observed.
    assert twin["minimum_detectable_effect"] > abs(twin["judge"]["mean_diff"])
    assert twin["prompts_for_80_power"] is None or twin["prompts_for_80_power"] > N_PROMPTS
    # Holm over the 6 pairs: every judge p-value is at least the uncorrected one.
    assert report["settings"]["correction"] == "holm" and len(report["pairs"]) == 6
    assert all(p["system_a"] == "v1" for p in report["pairs"][:3])  # the baseline is A of its pairs

    # Drift against the baseline: v2's scores moved, v1-same's and v1-twin's did not.
    drift = report["drift"]["systems"]
    assert drift["v2"]["drift"] and drift["v2"]["psi"] > 0.2
    assert not drift["v1-same"]["drift"] and drift["v1-same"]["psi"] == pytest.approx(0.0)
    assert not drift["v1-twin"]["drift"]

    md = (out / "sbs.md").read_text()
    assert md.index("## Verdicts") < md.index("## Planning") < md.index("## Score drift")
    assert "| v1 vs v2 | **A better (v1)** |" in md
    for png in ("distribution.png", "differences.png"):
        assert (out / png).stat().st_size > 1000


def test_assessors_verdict_beside_the_judges(tmp_path, renders):
    # The same pictures as a canonical dataset with votes: assessors find v2 worse, v1/v1-twin alike.
    root, scores = renders
    rows = []
    rng = np.random.default_rng(3)
    for system in ("v1", "v1-twin", "v2"):
        for i in range(N_PROMPTS):
            votes = int(rng.integers(3, 6)) if system == "v2" else int(rng.integers(0, 2))
            rows.append(
                {
                    "image": f"{system}/p{i:02d}.png",
                    "prompt_id": f"p{i:02d}",
                    "system": system,
                    "defect_votes": votes,
                    "total_votes": 5,
                }
            )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    out = tmp_path / "report"
    model_dir = tmp_path / "judge-model"
    model_dir.mkdir()
    (model_dir / "judge_metadata.json").write_text(json.dumps({"metrics": {"validation_threshold": 0.25}}))
    with _server(scores) as server:
        args = _args(root, _config(tmp_path, server.base_url), out, "--judge-metadata", str(model_dir))
        assert sbs_cli.main([*args, "--threshold", "0.9"]) == 0
    report = json.loads((out / "sbs.json").read_text())
    assert report["has_labels"] and report["dataset"]["systems"] == ["v1", "v1-twin", "v2"]
    # The judge's validation threshold wins over --threshold, and says so.
    settings = report["settings"]
    assert (
        settings["threshold"] == 0.25
        and "judge_metadata.json (overrides --threshold 0.9)" in (settings["threshold_source"])
    )
    v1 = np.array([scores[file_sha256(root / f"v1/p{i:02d}.png")] for i in range(N_PROMPTS)])
    assert report["systems"]["v1"]["defect_rate"] == pytest.approx(np.mean(v1 >= 0.25))
    v1_v2 = _pair(report, "v1", "v2")
    assert v1_v2["assessors"]["verdict"] == "A better" and v1_v2["assessors_agree"]
    # The assessors' side is the same test on the vote shares: the numbers eval.sbs.sbs_pairs gives.
    from eval import sbs_stats as S

    frame = pd.DataFrame(rows).assign(soft_label=lambda f: f["defect_votes"] / 5, p=0.5)
    (ref,) = [
        p for p in S.sbs_pairs(frame, "p", correction="holm") if (p.system_a, p.system_b) == ("v1", "v2")
    ]
    assert v1_v2["assessors"]["p_value"] == pytest.approx(ref.assessors.p_value)
    assert v1_v2["assessors"]["mean_diff"] == pytest.approx(ref.assessors.mean_diff)
    md = (out / "sbs.md").read_text()
    assert "assessors' verdict" in md and "the assessors call significant, the judge gives the same verdict on" in md


def test_kill_resume_and_one_cache_with_compare(tmp_path, renders):
    root, scores = renders
    answered_before_kill = 13
    pictures = 3 * N_PROMPTS
    with _server(scores, hold_after=answered_before_kill) as server:
        config = _config(tmp_path, server.base_url)
        out = tmp_path / "report"
        cmd = [sys.executable, "-m", "eval.sbs", *_args(root, config, out)]
        cache_file = out / "cache" / "fake-judge.jsonl"
        killed_in_flight = server.start_and_kill(cmd, ROOT, cache_file, answered_before_kill)
        assert not (out / "sbs.md").exists()

        assert sbs_cli.main(cmd[3:]) == 0  # resume
        assert set(server.answered) == set(scores) and set(server.answered.values()) == {1}
        assert sum(server.received.values()) == pictures + killed_in_flight
        records = [json.loads(line) for line in cache_file.read_text().splitlines()]
        assert len(records) == len({r["key"] for r in records}) == pictures
        report = json.loads((out / "sbs.json").read_text())
        assert report["settings"]["n_cached"] == answered_before_kill

        # eval.compare on the same pictures (with labels now) and the same cache folder asks for nothing.
        rows = [
            {"image": f"{s}/p{i:02d}.png", "prompt_id": f"p{i:02d}", "system": s, "label": int(s == "v2")}
            for s in ("v1", "v1-twin", "v2")
            for i in range(N_PROMPTS)
        ]
        pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
        before = sum(server.received.values())
        code = compare.main(
            [
                "--dataset",
                str(root),
                "--judges",
                str(config),
                "--output",
                str(tmp_path / "compare"),
                "--cache-dir",
                str(out / "cache"),
                "--split",
                "all",
                "--min-side",
                "64",
                "--bootstrap",
                "20",
                "--no-progress",
            ]
        )
        assert code == 0 and sum(server.received.values()) == before
    preds = pd.read_csv(tmp_path / "compare" / "predictions.csv")
    assert preds["cached"].all() and len(preds) == pictures


def test_bad_inputs_exit_2_with_the_reason(tmp_path, make_renders, capsys):
    def run(dataset: Path, config: Path, *extra: str) -> tuple[int, str]:
        code = sbs_cli.main(_args(dataset, config, tmp_path / "out", *extra))
        return code, capsys.readouterr().err

    with FakeOpenAIServer(models=["fake-judge"], default=Reply.verbalized(0.3)) as server:
        url = server.base_url
        config = _config(tmp_path, url)
        (tmp_path / "empty").mkdir()
        code, err = run(tmp_path / "empty", config)
        assert code == 2 and "empty" in err and "no label table" in err

        one = make_renders(tmp_path / "one", {"a": {"p1": 1, "p2": 2}, "b": {"p1": 3}})
        code, err = run(one, config)
        assert code == 2 and "system 'b' has 1 image(s)" in err

        apart = make_renders(tmp_path / "apart", {"a": {"p1": 1, "p2": 2}, "b": {"p3": 3, "p4": 4}})
        code, err = run(apart, config)
        assert code == 2 and "systems 'a' and 'b' share no prompt" in err

        three = {"p1": 1, "p2": 2, "p3": 3}
        broken = make_renders(tmp_path / "broken", {"a": three, "b": {k: v + 10 for k, v in three.items()}})
        (broken / "b" / "p2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        code, err = run(broken, config)
        assert code == 2 and "1 unreadable image(s): b/p2.png" in err and "--skip-bad-images" in err
        assert server.total_answered == 0  # nothing is scored before the input is known to be usable
        code, err = run(broken, config, "--skip-bad-images")
        assert code == 0, err

        code, err = run(one, config, "--systems", "a", "c")
        assert code == 2 and "no system 'c'" in err
        code, err = run(broken, config, "--skip-bad-images", "--judge-metadata", str(tmp_path / "nowhere"))
        assert code == 2 and "nowhere: no judge_metadata.json there" in err
    assert "Traceback" not in err

    # The judge goes away: the run stops with the endpoint named, and what was scored stays cached.
    cache = tmp_path / "out" / "cache" / "fake-judge.jsonl"
    lines_before = cache.read_text().splitlines()
    make_renders(broken, {"c": {"p1": 5, "p2": 6, "p3": 7}})
    code, err = run(broken, config, "--skip-bad-images")
    assert code == 2 and "unreachable" in err and url in err
    assert "kept in" in err and cache.read_text().splitlines() == lines_before


def test_agreement_is_counted_apart_for_significant_and_tied_pairs():
    from eval.sbs_report import agreement_text

    # The judge misses all three pairs the assessors call significant and agrees on the three ties.
    pairs = [{"assessors_significant": True, "assessors_agree": False}] * 3
    pairs += [{"assessors_significant": False, "assessors_agree": True}] * 3
    assert agreement_text(pairs) == (
        "On the 3 pairs the assessors call significant, the judge gives the same verdict on 0; on the 3 pairs "
        "they do not, the judge also finds no significant difference on 3."
    )
    one = [{"assessors_significant": True, "assessors_agree": True}]
    assert agreement_text(one) == "On the 1 pair the assessors call significant, the judge gives the same verdict on 1."
    assert agreement_text([{"assessors_significant": False, "assessors_agree": False}]).startswith(
        "The assessors call no pair significant; on the 1 pair they do not"
    )
