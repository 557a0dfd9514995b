"""A small OpenAI-compatible chat-completions server on loopback, scripted per image, for tests without internet.

It stands in for GPT-5.1 (verbalized JSON answers) and can also answer in logprob mode. Each request's image
is identified by the sha256 of the bytes in its data URL (the client sends plain RGB PNG/JPEG files as they
are, so that equals the file's sha256). Per image, a script of replies is consumed in order (the last one
repeats); without a script the default reply is used:

    Reply.verbalized(0.8, ["smear"])     {"defect_probability": 0.8, "defects": ["smear"]} as content
    Reply.text("not json")               any content, e.g. malformed JSON or prose
    Reply.refusal("I can't help")        message.refusal set, content null
    Reply.status(429, retry_after=0)     an HTTP error with an OpenAI-style error body (429, 500, 400, ...)
    Reply.logprobs({"Yes": -0.2, "No": -1.8})   first-token top_logprobs, as vLLM returns them
    Reply.hang(5.0)                      wait before answering (timeouts)

Counters: ``received[sha]`` (requests that arrived) and ``answered[sha]`` (requests answered with 200).
``hold_after=N`` answers the first N chat requests and holds every later one until ``release()``; held requests
that are ``abort_held()``-ed are dropped without an answer (as if the client had died) -- the kill-and-resume
test uses this to kill the harness with requests in flight.

    with FakeOpenAIServer(models=["gpt-5.1"], default=Reply.verbalized(0.3)) as server:
        server.script[sha] = [Reply.status(500), Reply.verbalized(0.9)]
        JudgeClient(server.base_url, "gpt-5.1", api_key="test", ...)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    kind: str
    content: str | None = None
    status_code: int = 200
    retry_after: float | None = None
    top_logprobs: dict[str, float] = field(default_factory=dict)
    delay: float = 0.0

    @staticmethod
    def verbalized(p: float, defects: Iterable[str] = ()) -> Reply:
        return Reply("content", json.dumps({"defect_probability": p, "defects": list(defects)}))

    @staticmethod
    def text(content: str) -> Reply:
        return Reply("content", content)

    @staticmethod
    def refusal(text: str = "I'm sorry, but I can't help with that.") -> Reply:
        return Reply("refusal", text)

    @staticmethod
    def status(code: int, retry_after: float | None = None) -> Reply:
        return Reply("status", status_code=code, retry_after=retry_after)

    @staticmethod
    def logprobs(top: dict[str, float]) -> Reply:
        return Reply("logprobs", top_logprobs=dict(top))

    @staticmethod
    def hang(seconds: float, then: Reply | None = None) -> Reply:
        base = then or Reply.verbalized(0.5)
        return Reply(base.kind, base.content, base.status_code, base.retry_after, base.top_logprobs, seconds)


def image_sha256(body: dict[str, Any]) -> str | None:
    """sha256 of the first data-URL image in a chat-completions request body."""
    for message in body.get("messages", []):
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = part.get("image_url", {}).get("url", "")
                if url.startswith("data:") and "," in url:
                    return hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()
    return None


class FakeOpenAIServer:
    def __init__(
        self,
        *,
        models: Iterable[str] = ("fake-judge",),
        default: Reply | Callable[[str | None, dict[str, Any]], Reply] | None = None,
        delay: float = 0.0,
        hold_after: int | None = None,
        api_key: str | None = None,
    ):
        self.models = list(models)
        self.default = default or Reply.verbalized(0.5)
        self.delay = delay
        self.hold_after = hold_after
        self.api_key = api_key  # when set, requests without "Bearer <api_key>" get 401
        self.script: dict[str, list[Reply]] = {}
        self.received: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._aborted = threading.Event()
        self._n_admitted = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> FakeOpenAIServer:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.abort_held()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ gate

    def release(self) -> None:
        """Answer the held requests and stop holding."""
        self.hold_after = None
        self._released.set()

    def abort_held(self) -> None:
        """Drop the held requests without an answer, and stop holding new ones."""
        self.hold_after = None
        self._aborted.set()
        self._released.set()

    @property
    def total_answered(self) -> int:
        return sum(self.answered.values())

    # ------------------------------------------------------------------ replies

    def _next_reply(self, sha: str | None, body: dict[str, Any]) -> Reply:
        with self._lock:
            script = self.script.get(sha or "")
            if script:
                return script.pop(0) if len(script) > 1 else script[0]
        return self.default(sha, body) if callable(self.default) else self.default

    def _should_hold(self) -> bool:
        with self._lock:
            if self.hold_after is None:
                return False
            if self._n_admitted < self.hold_after:
                self._n_admitted += 1
                return False
            return True


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass  # quiet tests

    def _send(self, code: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _authorised(self) -> bool:
        key = self.fake.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._send(401, _error("Incorrect API key provided", "invalid_request_error", "invalid_api_key"))
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if not self._authorised():
            return
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.fake.models]
            self._send(200, {"object": "list", "data": data})
        else:
            self._send(404, _error(f"no route {self.path}", "not_found", None))

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, _error(f"no route {self.path}", "not_found", None))
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._send(400, _error("body is not JSON", "invalid_request_error", None))
            return
        fake = self.fake
        sha = image_sha256(body)
        with fake._lock:
            fake.received[sha or ""] += 1
            fake.bodies.append(body)
        if body.get("model") not in fake.models:
            self._send(404, _error(f"The model `{body.get('model')}` does not exist.", "NotFoundError", None))
            return
        if fake._should_hold():
            fake._released.wait(timeout=120)
            if fake._aborted.is_set():
                self.close_connection = True  # the caller is gone: no answer, not counted as answered
                return
        reply = fake._next_reply(sha, body)
        if fake.delay or reply.delay:
            time.sleep(fake.delay + reply.delay)
        if reply.kind == "status":
            headers = {"Retry-After": str(reply.retry_after)} if reply.retry_after is not None else None
            self._send(
                reply.status_code, _error(f"scripted HTTP {reply.status_code}", "server_error", None), headers
            )
            return
        self._send(200, _completion(body, reply))
        with fake._lock:
            fake.answered[sha or ""] += 1


def _error(message: str, kind: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    logprobs = None
    if reply.kind == "refusal":
        message["refusal"] = reply.content
    elif reply.kind == "logprobs":
        top = sorted(reply.top_logprobs.items(), key=lambda kv: -kv[1])
        message["content"] = top[0][0] if top else ""
        k = int(body.get("top_logprobs") or len(top))
        candidates = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top[:k]]
        first = candidates[0] if candidates else {"token": "", "logprob": 0.0, "bytes": []}
        logprobs = {"content": [{**first, "top_logprobs": candidates}]}
    else:
        message["content"] = reply.content
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "logprobs": logprobs, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


if __name__ == "__main__":  # a manual stand-in endpoint: python tests/fake_openai_server.py
    import argparse

    parser = argparse.ArgumentParser(description="fake OpenAI-compatible endpoint (verbalized p=0.5 answers)")
    parser.add_argument("--model", action="append", default=None)
    args = parser.parse_args()
    with FakeOpenAIServer(models=args.model or ["fake-judge"]) as srv:
        print(srv.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
