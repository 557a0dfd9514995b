"""Classifier mode end to end: `python -m vlm_judge.serve --mode classify` (vLLM's pooling runner, /classify) on a
real vLLM CPU server gives the same p_defect as the HF reference and the logprob path, in one HTTP call that
carries only the image.

Its own server (start-up ~40-300 s, ~3 GB): the pooling runner cannot also serve chat completions.
"""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from PIL import Image

from vlm_judge.client import JudgeClient, fetch_answer_token_id_groups
from vlm_judge.images import to_data_url
from vlm_judge.modeling import load_model, load_processor, score_images
from vlm_judge.protocol import image_only_messages
from vlm_judge.server_process import JudgeServer

pytestmark = pytest.mark.slow


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
    probs = response.json()["data"][0]["probs"]
    defect_ids, clean_ids = fetch_answer_token_id_groups(server.base_url, server.served_model_name)
    assert len(probs) == len(defect_ids) + len(clean_ids) and sum(probs) == pytest.approx(1.0, abs=1e-5)
    assert sum(probs[: len(defect_ids)]) == pytest.approx(hf_scores[2], abs=1e-4)
