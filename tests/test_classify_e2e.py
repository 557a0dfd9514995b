"""One number per image, end to end on real vLLM CPU servers of the untrained tiny model (its answer words are
outside the top 20, where reading the top k and reading the exact distribution differ):
`python -m vlm_judge.serve --mode classify` (vLLM's pooling runner, /classify) gives the HF reference's p_defect in
one HTTP call that carries only the image, with named labels and p_defect in the answer; and every entry point
(client, score CLI, eval.compare, eval.sbs, reward, /classify, the README's curl) gives the same number within
1e-6. The chat server runs with --api-key, so the key is checked on the way.

Two servers (start-up ~40-300 s each, ~3 GB each): the pooling runner cannot also serve chat completions.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from readme_blocks import readme_block, run_readme_block

from vlm_judge.client import JudgeClient, fetch_answer_token_id_groups
from vlm_judge.images import to_data_url
from vlm_judge.modeling import load_model, load_processor, score_images
from vlm_judge.protocol import image_only_messages
from vlm_judge.serving.judge_server import JudgeServer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
KEY = "test-key-123"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three different 1024x1024 generations (native resolution, 1369 visual tokens each)."""
    folder = tmp_path_factory.mktemp("gens")
    paths = []
    for seed in range(3):
        pixels = (np.random.default_rng(seed).random((1024, 1024, 3)) * (60 + 90 * seed)).astype(np.uint8)
        path = folder / f"gen{seed}.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def hf_scores(tiny_model_dir, images):
    return score_images(load_model(tiny_model_dir, dtype="float32"), load_processor(tiny_model_dir), images)


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    judge_server = JudgeServer(tiny_model_dir, extra_args=["--mode", "classify"])
    judge_server.start()
    yield judge_server
    judge_server.stop()


@pytest.fixture(scope="module")
def chat_server(tiny_model_dir):
    judge_server = JudgeServer(tiny_model_dir, served_model_name="base-tiny", extra_args=["--api-key", KEY])
    judge_server.start()
    yield judge_server
    judge_server.stop()


def test_classify_client_matches_hf_and_the_logprob_rule(server, images, hf_scores):
    defect_ids, clean_ids = fetch_answer_token_id_groups(server.base_url, server.served_model_name)
    assert len(defect_ids) > 1 and len(clean_ids) > 1  # the tiny tokenizer has Yes/yes/ Yes... variants
    with JudgeClient(
        server.base_url, server.served_model_name, endpoint="classify", max_concurrency=2
    ) as judge:
        results = judge.score_batch(images)
    assert [r.error for r in results] == [None, None, None]
    assert [r.p_defect for r in results] == pytest.approx(hf_scores, abs=1e-4)
    assert max(hf_scores) - min(hf_scores) > 1e-4  # the images really score differently


def test_image_only_classify_request_is_one_http_call(server, images, hf_scores, tiny_model_dir):
    """What curl sends: the image only, no prompt, no add_generation_prompt; the server adds both."""
    root = server.base_url.removesuffix("/v1")
    body = {"model": server.served_model_name, "messages": image_only_messages(to_data_url(images[2]))}
    response = httpx.post(f"{root}/classify", json=body, timeout=300)
    assert response.status_code == 200, response.text
    item = response.json()["data"][0]
    probs = item["probs"]
    defect_ids, clean_ids = fetch_answer_token_id_groups(server.base_url, server.served_model_name)
    assert len(probs) == len(defect_ids) + len(clean_ids) and sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert sum(probs[: len(defect_ids)]) == pytest.approx(hf_scores[2], abs=1e-4)
    # Self-describing: every label is named by the answer variant it reads, and p_defect is in the answer.
    words = [label.strip().casefold() for label in item["labels"]]
    assert words == ["yes"] * len(defect_ids) + ["no"] * len(clean_ids)
    assert item["label"] == item["labels"][int(np.argmax(probs))]
    assert item["p_defect"] == pytest.approx(sum(probs[: len(defect_ids)]) / sum(probs), abs=1e-12)
    assert item["p_defect_method"] == "classify"


def test_readme_classify_curl_runs_as_written_on_a_1024_png(server, images, hf_scores, tmp_path):
    Image.open(images[0]).save(tmp_path / "gen.png")
    assert (tmp_path / "gen.png").stat().st_size > 1_000_000  # a real-size PNG: too long for a command line
    chat_block = readme_block("python3 -c 'import base64")
    builder = next(line for line in chat_block.splitlines() if line.startswith("python3 -c"))
    assert run_readme_block(builder, "", tmp_path) == ""  # the README's request builder writes req.json
    classify = readme_block("$JUDGE/classify")
    p_defect = float(run_readme_block(classify, server.base_url.removesuffix("/v1"), tmp_path))
    assert p_defect == pytest.approx(hf_scores[0], abs=1e-4)


def test_the_api_key_is_required_and_the_client_sends_it(chat_server, images):
    root = chat_server.base_url.removesuffix("/v1")
    body = {"model": "base-tiny", "messages": image_only_messages(to_data_url(images[0]))}
    assert httpx.post(f"{root}/v1/chat/completions", json=body, timeout=120).status_code == 401
    with JudgeClient(chat_server.base_url, "base-tiny", max_retries=0) as judge:
        refused = judge.score(images[0])
    assert refused.error_kind == "AuthenticationError" and refused.attempts == 1
    with JudgeClient(chat_server.base_url, "base-tiny", api_key=KEY) as judge:
        assert judge.score(images[0]).ok


def test_every_entry_point_gives_one_number_per_image(
    chat_server, server, tiny_model_dir, tmp_path, monkeypatch
):
    """The same images through the client, the score CLI, eval.compare, eval.sbs, the reward, the README's curl
    (image-only, p_defect from the server) and /classify: one p_defect each, within 1e-6; and the answer words
    are outside the top 20 (so reading the top k would give other numbers, or none)."""
    from eval import compare
    from eval import sbs as sbs_cli
    from vlm_judge import score
    from vlm_judge.reward import DefectReward

    data = tmp_path / "data"
    rows = []
    for system, offset in (("x", 0), ("y", 10)):
        (data / system).mkdir(parents=True)
        for i in range(3):
            pixels = np.random.default_rng(400 + offset + i).integers(0, 256, (224, 224, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(data / system / f"p{i}.png")
            rows.append(
                {"image": f"{system}/p{i}.png", "prompt_id": f"p{i}", "system": system, "label": i % 2}
            )
    pd.DataFrame(rows).to_csv(data / "labels.csv", index=False)
    names = [r["image"] for r in rows]
    paths = [str(data / name) for name in names]
    url = chat_server.base_url
    config = tmp_path / "judge.yaml"
    config.write_text(
        "name: tiny\nmodel: base-tiny\nbase_url_env: AGREE_URL\napi_key_env: AGREE_KEY\nmax_concurrency: 2\n"
    )
    monkeypatch.setenv("AGREE_URL", url)
    monkeypatch.setenv("AGREE_KEY", KEY)
    paths_by = {}

    with JudgeClient(url, "base-tiny", api_key=KEY) as judge:
        results = judge.score_batch(paths, names)
    assert {r.method for r in results} == {"exact"}
    paths_by["JudgeClient"] = [r.p_defect for r in results]
    with JudgeClient(url, "base-tiny", api_key=KEY, exact_answer_logprobs=False) as judge:
        top_k = judge.score_batch(paths, names)
    assert all(
        r.error_kind == "AnswerNotFoundError" or r.p_defect in (0.0, 1.0) for r in top_k
    )  # outside top 20

    preds = tmp_path / "preds.csv"
    args = ["--base-url", url, "--model", "base-tiny", "--api-key", KEY, "--input", str(data / "labels.csv")]
    assert score.main([*args, "--output", str(preds), "--no-progress"]) == 0
    table = pd.read_csv(preds).set_index("image")
    assert set(table["method"]) == {"exact"}
    paths_by["vlm_judge.score"] = [table.loc[n, "p_defect"] for n in names]

    out = tmp_path / "compare"
    common = ["--min-side", "64", "--bootstrap", "50", "--no-progress"]
    assert (
        compare.main(
            ["--dataset", str(data), "--split", "all", "--output", str(out), *common, "--judges", str(config)]
        )
        == 0
    )
    compared = pd.read_csv(out / "predictions.csv").set_index("image")
    paths_by["eval.compare"] = [compared.loc[n, "p_defect"] for n in names]

    sbs_out = tmp_path / "sbs"
    assert (
        sbs_cli.main(["--dataset", str(data), "--judge", str(config), "--output", str(sbs_out), *common]) == 0
    )
    sbs_scores = pd.read_csv(sbs_out / "scores.csv").set_index("image")
    paths_by["eval.sbs"] = [sbs_scores.loc[n, "p_defect"] for n in names]

    reward = DefectReward(url, model="base-tiny", api_key=KEY)
    paths_by["DefectReward"] = [1.0 - r for r in reward(paths, names)]

    root = url.removesuffix("/v1")
    curled = []
    for path in paths:
        body = {"model": "base-tiny", "messages": image_only_messages(to_data_url(path))}
        answer = httpx.post(
            f"{root}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120
        )
        assert answer.status_code == 200 and answer.json()["p_defect_method"] == "exact", answer.text
        curled.append(answer.json()["p_defect"])
    paths_by["curl (image only)"] = curled

    with JudgeClient(server.base_url, server.served_model_name, endpoint="classify") as judge:
        classified = judge.score_batch(paths, names)
    assert {r.method for r in classified} == {"classify"}
    paths_by["/classify"] = [r.p_defect for r in classified]

    hf = score_images(load_model(tiny_model_dir, dtype="float32"), load_processor(tiny_model_dir), paths)
    reference = np.array(paths_by["JudgeClient"], dtype=float)
    table_lines = [
        f"{name:>20}: max |diff| vs JudgeClient {np.abs(np.array(v, dtype=float) - reference).max():.2e}"
        for name, v in paths_by.items()
    ]
    table_lines.append(
        f"{'HF reference':>20}: max |diff| vs JudgeClient {np.abs(np.array(hf) - reference).max():.2e}"
    )
    print("\n".join(table_lines))
    (tmp_path / "agreement.json").write_text(json.dumps(paths_by))
    for name, values in paths_by.items():
        assert np.abs(np.array(values, dtype=float) - reference).max() < 1e-6, (name, table_lines)
    assert np.ptp(reference) > 1e-4  # the images really score differently
