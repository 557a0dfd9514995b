"""The judge server's request gate (vlm_judge.serving.gate) as an ASGI app in front of a stand-in for vLLM: what it
refuses and why, what it adds to the served prompt's answers, and its drain. The same gate in front of real vLLM
is tested in tests/test_serving_e2e.py."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import struct
import zlib

import httpx
import numpy as np
import pytest
from PIL import Image

from vlm_judge.serving.gate import GateSettings, RequestGate

DEFECT_IDS, CLEAN_IDS = [9454, 9693], [2753, 2308]


def png_data_url(width: int = 64, height: int = 64) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def png_header_only(width: int, height: int) -> str:
    """A PNG that declares width x height and holds no pixel data: what a decompression bomb's header says."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(data).decode()


def chat(url: str, text: str | None = None, **options) -> dict:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    if text is not None:
        content.append({"type": "text", "text": text})
    return {"model": "defect-judge", "messages": [{"role": "user", "content": content}], **options}


class StandInVllm:
    """Records what reaches "vLLM" and answers like it: a chat completion whose logprobs are the requested answer
    ids (P(Yes variants) = 0.3 + 0.1, P(No variants) = 0.4 + 0.2), a /classify answer, or a 500 for a link."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.release = asyncio.Event()
        self.hold = False

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body) if body else {}
        self.bodies.append(request)
        if self.hold:
            await self.release.wait()
        if scope["path"] == "/health":
            status, answer = 200, {}
        elif scope["path"] == "/classify":
            status, answer = (
                200,
                {"data": [{"index": 0, "label": "No", "probs": [0.1, 0.2, 0.3, 0.4], "num_classes": 4}]},
            )
        elif any(
            "http" in part.get("image_url", {}).get("url", "")[:4]
            for part in request["messages"][0]["content"]
        ):
            status, answer = 500, {"error": {"message": "failed to fetch"}}
        else:
            entries = [
                {"token": token, "logprob": math.log(p)}
                for token, p in (("Yes", 0.3), (" Yes", 0.1), ("No", 0.4), (" No", 0.2))
            ]
            answer = {"choices": [{"logprobs": {"content": [{"token": "No", "top_logprobs": entries}]}}]}
            status = 200
        data = json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})


def gate_and_client(**settings) -> tuple[RequestGate, StandInVllm, httpx.AsyncClient]:
    vllm = StandInVllm()
    defaults = {
        "defect_ids": DEFECT_IDS,
        "clean_ids": CLEAN_IDS,
        "labels": ["Yes", " Yes", "No", " No"],
        "max_image_pixels": 1024 * 1024,
    }
    gate = RequestGate(vllm, GateSettings(**{**defaults, **settings}))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=gate), base_url="http://judge")
    return gate, vllm, client


def run(coroutine):
    return asyncio.run(coroutine)


def test_images_must_be_inline_valid_and_bounded():
    async def main():
        gate, vllm, client = gate_and_client()
        async with client:
            cases = {
                "link": (chat("http://127.0.0.1:1/x.png"), 400, "accepts images only inline, as a data URL"),
                "file": (chat("file:///etc/passwd"), 400, "URL scheme file: is not accepted"),
                "not base64": (chat("data:image/png;base64,@@@@"), 400, "base64 does not decode"),
                "not an image": (
                    chat("data:image/png;base64,bm90IGFuIGltYWdl"),
                    400,
                    "not an image PIL can read",
                ),
                "too many pixels": (
                    chat(png_header_only(2048, 2048)),
                    413,
                    "2048x2048 = 4194304 pixels exceeds",
                ),
                "bomb": (chat(png_header_only(100_000, 100_000)), 400, "decompression bomb refused"),
            }
            for name, (body, status, message) in cases.items():
                response = await client.post("/v1/chat/completions", json=body)
                assert response.status_code == status, name
                assert message in response.json()["error"]["message"], (name, response.text)
            assert vllm.bodies == []  # none of them reached vLLM
            ok = await client.post("/v1/chat/completions", json=chat(png_data_url(), text="a question"))
            assert ok.status_code == 200 and len(vllm.bodies) == 1
            assert "p_defect" not in ok.json()  # a client-built request: the client reads its own answer

    run(main())


def test_allowed_media_domains_let_links_through_and_a_failed_fetch_is_a_client_error():
    async def main():
        _, vllm, client = gate_and_client(allowed_media_domains=["images.example.com"])
        async with client:
            other = await client.post("/v1/chat/completions", json=chat("https://evil.example.com/x.png"))
            assert other.status_code == 400 and "not an allowed media domain" in other.text
            fetched = await client.post("/v1/chat/completions", json=chat("https://images.example.com/x.png"))
            assert len(vllm.bodies) == 1  # the allowed link reached vLLM, which failed to fetch it (a 500)...
            assert (
                fetched.status_code == 400 and "could not be fetched" in fetched.text
            )  # ...a 400 for the client

    run(main())


def test_image_only_requests_are_read_exactly_and_carry_p_defect():
    async def main():
        _, vllm, client = gate_and_client()
        async with client:
            response = await client.post(
                "/v1/chat/completions", json=chat(png_data_url(), top_logprobs=20, max_tokens=50)
            )
            sent = vllm.bodies[-1]
            assert sent["logprob_token_ids"] == DEFECT_IDS + CLEAN_IDS and "top_logprobs" not in sent
            assert (sent["max_tokens"], sent["temperature"], sent["logprobs"]) == (1, 0, True)
            answer = response.json()
            assert answer["p_defect"] == pytest.approx(0.4 / (0.4 + 0.6), abs=1e-12)
            assert answer["p_defect_method"] == "exact"
            classify = await client.post("/classify", json=chat(png_data_url()))
            item = classify.json()["data"][0]
            assert item["labels"] == ["Yes", " Yes", "No", " No"] and item["p_defect_method"] == "classify"
            assert item["label"] == " No"  # the likeliest label (0.4), by the variant it reads
            assert item["p_defect"] == pytest.approx(
                0.3, abs=1e-12
            )  # (0.1 + 0.2) / 1.0: the defect labels' share

    run(main())


def test_requests_without_the_api_key_go_to_vllms_own_check_untouched():
    async def main():
        _, vllm, client = gate_and_client(api_keys=["secret"])
        async with client:
            await client.post("/v1/chat/completions", json=chat("http://127.0.0.1:1/x.png"))
            assert len(vllm.bodies) == 1  # passed through (vLLM's AuthenticationMiddleware answers 401)
            refused = await client.post(
                "/v1/chat/completions",
                json=chat("http://127.0.0.1:1/x.png"),
                headers={"Authorization": "Bearer secret"},
            )
            assert refused.status_code == 400 and len(vllm.bodies) == 1

    run(main())


async def requests_inside(n: int, **settings):
    """A gate whose stand-in vLLM holds `n` requests inside it; the gate's stop is recorded, not a SIGTERM."""
    gate, vllm, client = gate_and_client(**settings)
    stops: list[bool] = []
    gate.stop_process = lambda: stops.append(True)
    vllm.hold = True
    inside = [
        asyncio.create_task(client.post("/v1/chat/completions", json=chat(png_data_url()))) for _ in range(n)
    ]
    while len(vllm.bodies) < n:
        await asyncio.sleep(0.01)
    return gate, vllm, client, inside, stops


def test_drain_answers_what_is_inside_refuses_the_rest_then_stops(tmp_path):
    report = tmp_path / "drain.json"

    async def main():
        gate, vllm, client, inside, stops = await requests_inside(
            3, drain_report=str(report), drain_timeout_s=10
        )
        try:
            gate.drain()
            health = await client.get("/health")
            late = await client.post("/v1/chat/completions", json=chat(png_data_url()))
            assert health.status_code == 503 and late.status_code == 503
            assert late.headers["retry-after"] == "1" and "shutting down" in late.json()["error"]["message"]
            assert not stops  # three requests are still inside
            vllm.release.set()
            answers = await asyncio.gather(*inside)
            assert [a.status_code for a in answers] == [200, 200, 200]
            for _ in range(100):
                if stops:
                    break
                await asyncio.sleep(0.01)
            assert stops == [True]
        finally:
            await client.aclose()

    run(main())
    assert json.loads(report.read_text()) == {
        "in_flight_at_drain": 3,
        "answered": 3,
        "cut_at_timeout": 0,
        "refused_while_draining": 2,
        "drain_s": pytest.approx(0.05, abs=0.5),
        "drain_timeout_s": 10,
    }


def test_drain_window_ends_with_the_open_requests_counted(tmp_path):
    report = tmp_path / "drain.json"

    async def main():
        gate, _, client, inside, stops = await requests_inside(
            1, drain_report=str(report), drain_timeout_s=0.2
        )
        try:
            gate.drain()
            await asyncio.sleep(0.5)
            assert stops == [True]
            inside[0].cancel()
        finally:
            await client.aclose()

    run(main())
    saved = json.loads(report.read_text())
    assert saved["in_flight_at_drain"] == 1 and saved["cut_at_timeout"] == 1 and saved["answered"] == 0
