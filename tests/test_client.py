"""The judge client against a fake OpenAI-compatible server: scoring, retries, named errors, both modes."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from fake_openai_server import Reply
from PIL import Image

from vlm_judge import client as client_module
from vlm_judge.client import AsyncJudgeClient, JudgeClient, fetch_answer_token_ids
from vlm_judge.protocol import DEFAULT_PROMPT_FILE, ProtocolError
from vlm_judge.serving.judge_server import free_port

VERBALIZED = DEFAULT_PROMPT_FILE.with_name("defect_judge_verbalized.yaml")


def grey(tmp_path, level: int, name: str | None = None) -> str:
    path = tmp_path / (name or f"grey{level}.png")
    Image.new("RGB", (64, 64), (level, level, level)).save(path)
    return str(path)


def make_client(server, **kwargs) -> JudgeClient:
    kwargs.setdefault("timeout", 5.0)
    return JudgeClient(server.base_url, "defect-judge", **kwargs)


def test_batch_scores_in_input_order_and_reports_each_result(server, tmp_path):
    levels = [51, 128, 204, 0, 255]
    paths = [grey(tmp_path, level) for level in levels]
    seen = []
    with make_client(server, max_concurrency=3) as judge:
        results = judge.score_batch(paths, on_result=lambda i, r: seen.append((i, r.image)))
    assert [r.image for r in results] == paths
    for level, result in zip(levels, results, strict=True):
        assert result.ok and result.error is None and result.attempts == 1
        assert result.p_defect == pytest.approx(level / 255, abs=1e-6)
        assert result.latency_ms > 0
    assert sorted(seen) == [(i, p) for i, p in enumerate(paths)]
    body = server.bodies[0]
    assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["logprobs"] is True
    assert body["top_logprobs"] == 20
    url = body["messages"][1]["content"][0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")  # a plain RGB PNG goes as its own bytes


def test_names_and_single_score(server, tmp_path):
    with make_client(server) as judge:
        result = judge.score(grey(tmp_path, 102), name="item-7")
        assert result.image == "item-7" and result.p_defect == pytest.approx(0.4, abs=1e-6)
        with pytest.raises(ValueError, match="names"):
            judge.score_batch([grey(tmp_path, 1)], names=["a", "b"])


def test_429_and_500_are_retried_then_succeed(server, tmp_path):
    server.queue = [Reply.error(429, "slow down", retry_after=0), Reply.error(503, "warming up")]
    with make_client(server, max_retries=3) as judge:
        result = judge.score(grey(tmp_path, 51))
    assert result.ok and result.attempts == 3 and server.chat_requests == 3


def test_persistent_5xx_gives_a_named_error_after_the_retries(server, tmp_path):
    server.queue = [Reply.error(500, "engine died")] * 10
    with make_client(server, max_retries=2) as judge:
        result = judge.score(grey(tmp_path, 51))
    assert not result.ok and result.p_defect is None
    assert result.error.startswith("ServerError: HTTP 500") and "engine died" in result.error
    assert "after 3 attempts" in result.error
    assert result.attempts == 3 and server.chat_requests == 3


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, "BadRequestError"), (401, "AuthenticationError"), (422, "UnprocessableEntityError")],
)
def test_client_errors_are_not_retried(server, tmp_path, status, kind):
    server.queue = [Reply.error(status, "no good")]
    with make_client(server, max_retries=3) as judge:
        result = judge.score(grey(tmp_path, 51))
    assert result.error.startswith(f"{kind}: HTTP {status}") and result.attempts == 1
    assert server.chat_requests == 1


def test_unknown_model_is_a_named_error_without_retry(server, tmp_path):
    with JudgeClient(server.base_url, "no-such-judge", max_retries=3) as judge:
        result = judge.score(grey(tmp_path, 51))
    assert result.error.startswith("NotFoundError: HTTP 404") and "'no-such-judge'" in result.error
    assert server.chat_requests == 1


def test_timeout_is_retried_then_named(server, tmp_path):
    slow = Reply.yes_no(0.5)
    slow.delay = 1.5
    server.queue = [slow, slow]
    with make_client(server, timeout=0.3, max_retries=1) as judge:
        result = judge.score(grey(tmp_path, 51))
    assert result.error.startswith("TimeoutError: no answer") and result.attempts == 2


def test_connection_dropped_mid_request_is_retried(server, tmp_path):
    server.queue = [Reply(status=0), Reply(status=0)]
    with make_client(server, max_retries=2) as judge:
        result = judge.score(grey(tmp_path, 51))
    assert result.ok and result.attempts == 3
    server.queue = [Reply(status=0)] * 3
    with make_client(server, max_retries=2) as judge:
        result = judge.score(grey(tmp_path, 51))
    assert result.error.startswith("ConnectionError: cannot reach") and result.attempts == 3


def test_connection_refused_is_retried_then_named(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with JudgeClient(url, "defect-judge", max_retries=2, timeout=2.0) as judge:
        result = judge.score(grey(tmp_path, 51))
    assert result.error.startswith("ConnectionError: cannot reach") and result.attempts == 3


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply.completion("Yes"), "ProtocolError: the server returned no logprobs"),
        (Reply.completion(None, []), "ProtocolError: the server returned no top_logprobs"),
        (
            Reply.completion(None, [{"token": "Maybe", "logprob": -0.1}]),
            "AnswerNotFoundError: neither 'Yes' nor 'No'",
        ),
        (Reply.completion(None, [{"token": "Yes", "logprob": "high"}]), "ProtocolError: malformed logprobs"),
        (Reply(200, {"id": "x", "choices": []}), "ProtocolError: the server returned no choices"),
        (
            Reply(200, b"<html>proxy error</html>"),
            "ProtocolError: the server's answer is not a chat completion",
        ),
    ],
)
def test_malformed_answers_are_named_errors_not_retried(server, tmp_path, reply, expected):
    server.queue = [reply]
    with make_client(server, max_retries=3) as judge:
        result = judge.score(grey(tmp_path, 51))
    assert not result.ok and result.error.startswith(expected) and ":" in result.error
    assert server.chat_requests == 1


def test_answer_words_are_merged_across_case_and_space_variants(server, tmp_path):
    server.queue = [Reply.yes_no(0.5, {" yes": -0.6931471805599453, "\n": -3.0})]
    with make_client(server) as judge:
        result = judge.score(grey(tmp_path, 51))
    assert result.p_defect == pytest.approx(2 / 3, abs=1e-9)  # P(Yes)+P( yes) = 1.0 vs P(No) = 0.5


def test_bad_images_fail_without_a_request_and_the_rest_scores(server, tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"definitely not an image")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(_truncated_png(tmp_path))
    good = [grey(tmp_path, 51), grey(tmp_path, 204)]
    images = [good[0], str(garbage), str(truncated), str(tmp_path / "missing.png"), good[1]]
    with make_client(server) as judge:
        results = judge.score_batch(images)
    assert [r.ok for r in results] == [True, False, False, False, True]
    assert (
        results[1].error.startswith(f"ImageError: image '{garbage}'") and "not an image" in results[1].error
    )
    assert "truncated" in results[2].error
    assert "does not exist" in results[3].error
    assert all(r.attempts == 0 and r.latency_ms is None for r in results[1:4])
    assert server.chat_requests == 2


def _truncated_png(tmp_path) -> bytes:
    import numpy as np

    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    return data[: len(data) // 2]


def test_on_result_exception_stops_the_batch(server, tmp_path):
    def explode(index, result):
        raise OSError("disk full")

    with make_client(server) as judge, pytest.raises(OSError, match="disk full"):
        judge.score_batch([grey(tmp_path, 1), grey(tmp_path, 2)], on_result=explode)


def test_exact_answer_token_ids_replace_top_logprobs(server, tmp_path):
    server.tokens = {"Yes": [11], " Yes": [12], "No": [21], " No": [22], "yes": [13, 14]}
    ids = fetch_answer_token_ids(server.base_url, "defect-judge")
    assert ids == [11, 12, 21, 22]
    with make_client(server, answer_token_ids=ids) as judge:
        assert judge.score(grey(tmp_path, 51)).ok
    body = server.bodies[-1]
    assert body["logprob_token_ids"] == ids and "top_logprobs" not in body


def test_exact_answer_logprobs_by_default_where_the_endpoint_has_vllms_tokenizer(server, tmp_path):
    # A hosted API (no /tokenize): the top k, and each result says so.
    with make_client(server, max_concurrency=1) as judge:
        results = judge.score_batch([grey(tmp_path, 61), grey(tmp_path, 62)])
    assert [r.method for r in results] == ["top_k", "top_k"] and all(r.attempts == 1 for r in results)
    assert server.bodies[-1]["top_logprobs"] == 20 and "logprob_token_ids" not in server.bodies[-1]
    # vLLM (its /tokenize answers): every Yes/No variant's logprob, asked once for the whole batch.
    server.tokens = {"Yes": [11], " Yes": [12], "No": [21], " No": [22]}
    with make_client(server, max_concurrency=2) as judge:
        results = judge.score_batch([grey(tmp_path, 63), grey(tmp_path, 64), grey(tmp_path, 65)])
    assert [r.method for r in results] == ["exact"] * 3 and all(r.attempts == 1 for r in results)
    assert all(b["logprob_token_ids"] == [11, 12, 21, 22] for b in server.bodies[-3:])
    assert all("top_logprobs" not in b for b in server.bodies[-3:])
    # Forced top k, and required exact against an endpoint that cannot: named at once.
    with make_client(server, exact_answer_logprobs=False) as judge:
        assert judge.score(grey(tmp_path, 66)).method == "top_k"
    server.tokens = {}
    with pytest.raises(ProtocolError, match="exact answer logprobs need a vLLM server"):
        make_client(server, exact_answer_logprobs=True)


def test_verbalized_mode_parses_json_and_sends_response_format(server, tmp_path):
    with make_client(server, prompt=VERBALIZED) as judge:
        result = judge.score(grey(tmp_path, 204))
    assert result.p_defect == pytest.approx(0.8, abs=1e-6) and result.defects == ("noise",)
    body = server.bodies[0]
    assert body["response_format"]["type"] == "json_schema"
    assert "logprobs" not in body and "max_tokens" not in body and "temperature" not in body
    assert "JSON" in body["messages"][1]["content"][1]["text"]


def test_verbalized_refusal_and_prose_are_named(server, tmp_path):
    server.queue = [
        Reply.completion(None, refusal="I can't assess this image."),
        Reply.completion("It looks fine."),
    ]
    with make_client(server, prompt=VERBALIZED, max_concurrency=1) as judge:
        refused = judge.score(grey(tmp_path, 51))
        prose = judge.score(grey(tmp_path, 52))
    assert refused.error.startswith("RefusalError: the model refused") and refused.attempts == 1
    assert prose.error.startswith("ProtocolError: reply is not JSON")


def test_verbalized_falls_back_when_response_format_is_unsupported(server, tmp_path):
    server.queue = [Reply.error(400, "response_format json_schema is not supported by this model")]
    with make_client(server, prompt=VERBALIZED, max_concurrency=1) as judge:
        first = judge.score(grey(tmp_path, 51))
        second = judge.score(grey(tmp_path, 102))
    assert first.ok and first.attempts == 2 and second.ok and second.attempts == 1
    assert "response_format" in server.bodies[0]
    assert all("response_format" not in body for body in server.bodies[1:])


def test_async_client_and_sync_client_inside_a_running_loop(server, tmp_path):
    paths = [grey(tmp_path, 51), grey(tmp_path, 153)]

    async def main():
        async with AsyncJudgeClient(server.base_url, "defect-judge", timeout=5.0) as judge:
            results = await judge.score_batch(paths)
        # the sync facade runs its own loop thread, so it also works where a loop is already running
        with make_client(server) as judge:
            sync_results = judge.score_batch(paths)
        return results, sync_results

    results, sync_results = asyncio.run(main())
    assert [r.p_defect for r in results] == pytest.approx([0.2, 0.6], abs=1e-6)
    assert [r.p_defect for r in sync_results] == [r.p_defect for r in results]


def test_result_is_a_plain_record():
    result = client_module.JudgeResult("a.png", 0.25, None, 12.5)
    assert result.ok and not client_module.JudgeResult("a.png", None, "ImageError: x", None, attempts=0).ok
    assert json.loads(json.dumps(dataclasses.asdict(result)))["p_defect"] == 0.25
