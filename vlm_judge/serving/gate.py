"""The judge server's front door: an ASGI middleware that vLLM's API server runs in front of its routes
(`--middleware vlm_judge.serving.gate.RequestGate`, added by vlm_judge.serving.vllm_command; settings come from the
launcher in the VLM_JUDGE_GATE environment variable as JSON, see GateSettings).

What it does, per request, before vLLM sees it:
- **images inline only**, unless the operator allowed media domains: an `image_url` must be a `data:` URL (base64);
  an http(s) URL is refused with 400 unless its host is in `--allowed-media-domains` (then vLLM fetches it, and a
  fetch that fails is a 400 naming the URL, not a 500); `file:` and every other scheme are refused. The server
  never reaches an address a client names.
- **bad images are the client's error**: base64 that does not decode, bytes that are no image, an image over
  `max_image_bytes` or `max_image_pixels` (a decompression bomb) get a 400/413 with a message that names the
  problem; the client does not retry them (4xx).
- **one number per image**: a request that carries only the image (the server adds the judge prompt, see
  protocol.server_chat_template) is answered with the exact answer-token distribution (`logprob_token_ids` of
  every Yes/No variant, one token, temperature 0), and the response carries `p_defect` (the protocol's rule) and
  `p_defect_method: "exact"`; a /classify response carries `p_defect` and the name of every label.
- **a stop that loses no accepted work**: on SIGUSR1 (the launcher sends it on the first SIGTERM) the gate drains:
  /health and every new request get a clean 503 (`Retry-After`, connection closed: a load balancer moves on and
  the client retries elsewhere), the requests already inside are answered, and when none is left (or after
  `drain_timeout_s`) it sends itself SIGTERM, vLLM's own shutdown, with an idle engine. What the drain did is
  written to `drain_report` (JSON) for the launcher's exit code.

Requests that do not carry the API key (when one is set) pass straight through to vLLM's own key check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from vlm_judge.serving.media import (
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MAX_IMAGE_PIXELS,
    MediaPolicy,
    Rejection,
    check_image_url,
    image_urls,
    is_image_only,
)

SETTINGS_ENV = "VLM_JUDGE_GATE"
JUDGED_PATHS = ("/v1/chat/completions", "/classify", "/v1/classify")
DEFAULT_DRAIN_TIMEOUT_S = 30.0  # a full batch at concurrency 8, 1024x1024, 2 CPU cores: ~3 s


@dataclass
class GateSettings:
    allowed_media_domains: list[str] = field(default_factory=list)  # empty: inline images only
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    drain_report: str | None = None  # where the drain's outcome is written (JSON)
    defect_ids: list[int] = field(default_factory=list)  # answer-token ids of the defect word's variants
    clean_ids: list[int] = field(default_factory=list)
    defect_word: str = "Yes"
    clean_word: str = "No"
    labels: list[str] = field(default_factory=list)  # classify mode: the classifier's label names, in order
    api_keys: list[str] = field(default_factory=list)

    @property
    def media(self) -> MediaPolicy:
        return MediaPolicy(self.allowed_media_domains, self.max_image_bytes, self.max_image_pixels)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> GateSettings:
        raw = (environ if environ is not None else os.environ).get(SETTINGS_ENV)
        return cls(**json.loads(raw)) if raw else cls()


# ---------------------------------------------------------------------------------------------- p_defect


def p_defect_of_chat(response: dict[str, Any], settings: GateSettings) -> float | None:
    """The protocol's p_defect of a chat completion answered with logprob_token_ids (None if it carries none)."""
    from vlm_judge.protocol import JudgePrompt, ProtocolError, p_defect_from_top_logprobs

    try:
        entries = response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    except (KeyError, IndexError, TypeError):
        return None
    words = JudgePrompt("", "", "", defect_word=settings.defect_word, clean_word=settings.clean_word)
    try:
        return p_defect_from_top_logprobs(entries, words)
    except ProtocolError:
        return None


def annotate_classify(response: dict[str, Any], settings: GateSettings) -> None:
    """Name each /classify item's labels (`labels`, and `label`: the likeliest one's answer variant) and add
    `p_defect` (the share of the defect-word labels)."""
    n_defect = len(settings.defect_ids)
    for item in response.get("data") or []:
        probs = item.get("probs") if isinstance(item, dict) else None
        if not isinstance(probs, list) or len(probs) != len(settings.labels):
            continue
        total = sum(float(p) for p in probs)
        item["labels"] = settings.labels
        item["label"] = settings.labels[max(range(len(probs)), key=lambda i: float(probs[i]))]
        item["p_defect"] = sum(float(p) for p in probs[:n_defect]) / total if total > 0 else None
        item["p_defect_method"] = "classify"


# ---------------------------------------------------------------------------------------------- the middleware


class RequestGate:
    """ASGI middleware (see the module docstring)."""

    def __init__(self, app: Any, settings: GateSettings | None = None) -> None:
        self.app = app
        self.settings = settings or GateSettings.from_env()
        self.in_flight = 0
        self.draining = False
        self.drain_started: float | None = None
        self.in_flight_at_drain = 0
        self.refused_while_draining = 0
        self._idle: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stop_process = lambda: os.kill(os.getpid(), signal.SIGTERM)  # vLLM's own shutdown
        with contextlib.suppress(ValueError):  # not the main thread (a test builds it elsewhere): drain() works
            signal.signal(signal.SIGUSR1, self._on_drain_signal)

    # -- drain

    def _on_drain_signal(self, _signum: int, _frame: Any) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.drain)
        else:  # no request has come yet: nothing is in flight
            self.draining = True
            self._finish_drain(cut=0)

    def drain(self) -> None:
        """Stop taking requests; answer those inside; then SIGTERM this process (vLLM's own shutdown)."""
        if self.draining:
            return
        self.draining = True
        self.drain_started = time.monotonic()
        self.in_flight_at_drain = self.in_flight
        _log(f"draining: {self.in_flight} request(s) in flight, new ones get 503")
        self._idle = asyncio.Event()
        if self.in_flight == 0:
            self._idle.set()
        asyncio.get_running_loop().create_task(self._wait_then_stop())

    async def _wait_then_stop(self) -> None:
        assert self._idle is not None
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=self.settings.drain_timeout_s)
            cut = 0
        except TimeoutError:
            cut = self.in_flight
        self._finish_drain(cut)

    def _finish_drain(self, cut: int) -> None:
        seconds = time.monotonic() - self.drain_started if self.drain_started else 0.0
        report = {
            "in_flight_at_drain": self.in_flight_at_drain,
            "answered": self.in_flight_at_drain - cut,
            "cut_at_timeout": cut,
            "refused_while_draining": self.refused_while_draining,
            "drain_s": round(seconds, 3),
            "drain_timeout_s": self.settings.drain_timeout_s,
        }
        _log(
            f"drained in {seconds:.1f} s: {report['answered']} of {self.in_flight_at_drain} in-flight request(s) "
            f"answered{f', {cut} still open at the {self.settings.drain_timeout_s:g} s limit' if cut else ''}; "
            "stopping vLLM"
        )
        if self.settings.drain_report:
            try:
                with open(self.settings.drain_report, "w", encoding="utf-8") as handle:
                    json.dump(report, handle)
            except OSError as exc:
                _log(f"warning: cannot write the drain report {self.settings.drain_report} ({exc})")
        # Nothing is in flight any more; when vLLM's engine process exits, its output handler still logs the
        # engine's death as an error with a traceback (EngineDeadError): expected now, so not logged.
        logging.getLogger("vllm.v1.engine.async_llm").addFilter(_EngineExitAfterDrain())
        self.stop_process()

    # -- requests

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        if self.draining:
            self.refused_while_draining += 1
            await _send_json(
                send,
                503,
                _error("the judge server is shutting down; retry on another replica", "ServiceUnavailable", 503),
                extra_headers=[(b"retry-after", b"1"), (b"connection", b"close")],
            )
            return
        self.in_flight += 1
        try:
            if scope["method"] == "POST" and scope["path"] in JUDGED_PATHS and self._authorised(scope):
                await self._judged(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if self.draining and self.in_flight == 0 and self._idle is not None:
                self._idle.set()

    def _authorised(self, scope: dict[str, Any]) -> bool:
        if not self.settings.api_keys:
            return True
        headers = dict(scope.get("headers") or [])
        return headers.get(b"authorization", b"").decode("latin-1") in {
            f"Bearer {key}" for key in self.settings.api_keys
        }

    async def _judged(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        limit = self.settings.max_image_bytes * 2 + 1024 * 1024  # base64 and JSON around one image
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_json(
                    send, 413, _error(f"request body over {limit} bytes", "PayloadTooLargeError", 413)
                )
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None  # vLLM answers a body that is not JSON with its own 400
        classify = scope["path"] != "/v1/chat/completions"
        exact = False
        remote = False
        if isinstance(body, dict):
            try:
                for index, url in enumerate(image_urls(body)):
                    check_image_url(url, self.settings.media, index)
                    remote = remote or not url.startswith("data:")
            except Rejection as exc:
                await _send_json(send, exc.status, _error(exc.message, exc.kind, exc.status))
                return
            if not classify and is_image_only(body) and self.settings.defect_ids:
                # The served prompt's answer, read exactly: one token, every Yes/No variant's logprob.
                body.update(max_tokens=1, temperature=0, logprobs=True)
                body["logprob_token_ids"] = self.settings.defect_ids + self.settings.clean_ids
                body.pop("top_logprobs", None)
                body.pop("stream", None)
                raw = json.dumps(body).encode()
                exact = True
        replay = _replay(raw, receive)
        if not (exact or classify or remote):
            await self.app(scope, replay, send)
            return
        status, headers, payload = await _capture(self.app, scope, replay)
        payload = self._rewrite(status, payload, exact=exact, classify=classify, remote=remote)
        if payload is None:
            payload = json.dumps(
                _error(
                    "the image URL could not be fetched or decoded (check that it is reachable and is an image)",
                    "BadRequestError",
                    400,
                )
            ).encode()
            status = 400
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _rewrite(self, status: int, payload: bytes, *, exact: bool, classify: bool, remote: bool) -> bytes | None:
        """The response body to send (None: a failed remote fetch, answered as a client error)."""
        if status >= 500 and remote:
            return None
        if status != 200:
            return payload
        try:
            response = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return payload
        if classify and self.settings.labels:
            annotate_classify(response, self.settings)
        elif exact:
            response["p_defect"] = p_defect_of_chat(response, self.settings)
            response["p_defect_method"] = "exact"
        return json.dumps(response).encode()


class _EngineExitAfterDrain(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "output_handler failed" not in record.getMessage()


def _replay(raw: bytes, receive: Any) -> Any:
    """`receive` for the app: the body read already, then the client's own messages (a disconnect)."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await receive()

    return replay


async def _capture(app: Any, scope: dict[str, Any], receive: Any) -> tuple[int, list[Any], bytes]:
    start: dict[str, Any] = {}
    body = bytearray()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, send)
    return int(start.get("status", 500)), list(start.get("headers") or []), bytes(body)


def _error(message: str, kind: str, code: int) -> dict[str, Any]:
    """An OpenAI-style error body (what the openai SDK reads into its exception's message)."""
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


async def _send_json(
    send: Any, status: int, body: dict[str, Any], extra_headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": data})


def _log(message: str) -> None:
    print(f"vlm_judge.serve: {message}", file=sys.stderr, flush=True)
