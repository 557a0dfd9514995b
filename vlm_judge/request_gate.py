"""The judge server's front door: an ASGI middleware that vLLM's API server runs in front of its routes
(`--middleware vlm_judge.request_gate.RequestGate`, added by vlm_judge.vllm_command; settings come from the
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
import base64
import binascii
import contextlib
import io
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

SETTINGS_ENV = "VLM_JUDGE_GATE"
JUDGED_PATHS = ("/v1/chat/completions", "/classify", "/v1/classify")
DEFAULT_MAX_IMAGE_BYTES = 32 * 1024 * 1024  # a 1024x1024 PNG is 1-3 MB
DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # 16x a 1024x1024 generation; PIL's own bomb check starts at ~89 M
DEFAULT_DRAIN_TIMEOUT_S = 30.0  # a full batch at concurrency 8, 1024x1024, 2 CPU cores: ~3 s
HEADER_BASE64_CHARS = 1 << 18  # 192 KiB of image bytes: past any PNG/JPEG/WebP header that declares the size


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

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> GateSettings:
        raw = (environ if environ is not None else os.environ).get(SETTINGS_ENV)
        return cls(**json.loads(raw)) if raw else cls()


class Rejection(Exception):
    """A request refused before vLLM sees it: the HTTP status and the message for the client."""

    def __init__(self, status: int, message: str, kind: str = "BadRequestError"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


# ---------------------------------------------------------------------------------------------- image checks


def image_urls(body: Any) -> list[str]:
    """Every image URL of a chat-shaped request body (`messages[*].content[*].image_url`)."""
    urls = []
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and "image_url" in part:
                image_url = part["image_url"]
                urls.append(str(image_url.get("url") if isinstance(image_url, dict) else image_url))
    return urls


def check_image_url(url: str, settings: GateSettings, index: int) -> None:
    """Rejection when the image at `url` must not reach vLLM (see the module docstring)."""
    where = f"image {index + 1}"
    if url.startswith("data:"):
        check_data_url(url, settings, where)
        return
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not settings.allowed_media_domains:
            raise Rejection(
                400,
                f"{where}: this judge server accepts images only inline, as a data URL "
                f"(data:image/png;base64,...), not a link ({_short(url)}); the operator can allow domains "
                "with --allowed-media-domains",
            )
        if parts.hostname not in settings.allowed_media_domains:
            raise Rejection(
                400,
                f"{where}: host {parts.hostname!r} is not an allowed media domain "
                f"({', '.join(settings.allowed_media_domains)})",
            )
        return
    raise Rejection(
        400,
        f"{where}: URL scheme {parts.scheme + ':' if parts.scheme else '(none)'} is not accepted; send the image "
        "as a data URL (data:image/png;base64,...)",
    )


def check_data_url(url: str, settings: GateSettings, where: str) -> None:
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise Rejection(400, f"{where}: a data URL must be base64-encoded (data:image/png;base64,...)")
    if len(payload) * 3 // 4 > settings.max_image_bytes:
        raise Rejection(
            413,
            f"{where}: {len(payload) * 3 // 4} bytes exceeds the server's limit of {settings.max_image_bytes} "
            "bytes per image",
            "PayloadTooLargeError",
        )
    # The header tells the format and the size (all a bomb check needs): decode only the first part.
    head = payload[:HEADER_BASE64_CHARS].strip()
    try:
        data = base64.b64decode(head[: len(head) // 4 * 4], validate=True)
    except (binascii.Error, ValueError):
        raise Rejection(400, f"{where}: the data URL's base64 does not decode") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only: cheap, and no bomb is decoded
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise Rejection(400, f"{where}: decompression bomb refused ({exc})") from None
    except UnidentifiedImageError:
        raise Rejection(400, f"{where}: the data is not an image PIL can read (no known image format)") from None
    except (OSError, ValueError) as exc:
        raise Rejection(400, f"{where}: the data is not an image PIL can read ({exc})") from None
    if width * height > settings.max_image_pixels:
        raise Rejection(
            413,
            f"{where}: {width}x{height} = {width * height} pixels exceeds the server's limit of "
            f"{settings.max_image_pixels} pixels (a decompression bomb, or far larger than a judge reads)",
            "PayloadTooLargeError",
        )


def is_image_only(body: Any) -> bool:
    """A request whose only message is a user turn with images and no text: the served prompt applies to it."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or len(messages) != 1 or not isinstance(messages[0], dict):
        return False
    content = messages[0].get("content")
    return (
        messages[0].get("role") == "user"
        and isinstance(content, list)
        and bool(content)
        and all(isinstance(p, dict) and "text" not in p and p.get("type") != "text" for p in content)
    )


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
                    check_image_url(url, self.settings, index)
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


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."


def _log(message: str) -> None:
    print(f"vlm_judge.serve: {message}", file=sys.stderr, flush=True)
