"""A fake OpenAI-compatible server on loopback, for tests without a GPU or the internet.

Routes: GET /v1/models, POST /v1/chat/completions and vLLM's POST /tokenize (``tokens``: text -> ids; while
``tokens`` is empty /tokenize answers 404, as a hosted API does, and the client reads the top-k logprobs). A request
for a model not in ``models`` gets the OpenAI 404; with ``api_key`` set, a request without "Bearer <api_key>"
gets 401.

What a chat request is answered with, first match wins:
  1. ``queue``: replies consumed one per chat request, in arrival order;
  2. ``script[sha]``: per image (sha256 of the bytes in the request's data URL, which equals the file's sha256 for
     the plain RGB PNG/JPEG files the client sends as they are), consumed in order, the last one repeating;
  3. ``default``: a Reply, or a function of the request body. The default default answers like the judge:
     p_defect = the image's mean grey level / 255, as first-token logprobs or, when the request asks for no
     logprobs, as verbalized JSON (so a test knows what each image must score).

Replies:
    Reply.yes_no(0.8)                      first-token logprobs with P(Yes) / (P(Yes) + P(No)) = 0.8
    Reply.logprobs({"Yes": -0.2, "No": -1.8})   first-token top_logprobs, as vLLM returns them
    Reply.verbalized(0.8, ["smear"])       {"defect_probability": 0.8, "defects": ["smear"]} as content
    Reply.text("not json"), Reply.refusal()    any content; message.refusal set with content null
    Reply.completion(content, top_logprobs, refusal)   a chat completion as given (malformed logprobs too)
    Reply.error(429, "slow down", retry_after=0)     an HTTP error with an OpenAI-style error body
    Reply(status=0)                        the connection closes without an answer (a crashed server)
    Reply(200, b"<html>...")               any body; ``delay`` (seconds) before answering, for timeouts

Recorded: ``bodies`` (every chat request's JSON, ``chat_requests`` their count), ``received[sha]`` (chat requests
that arrived) and ``answered[sha]`` (answered with 200). ``hold_after=N`` answers the first N chat requests and
holds every later one until ``release()``; ``abort_held()`` drops the held ones without an answer (as if the
caller had died); ``kill_when_held`` SIGKILLs a harness with requests in flight (the kill-and-resume tests).

    with FakeOpenAIServer(models=["gpt-5.1"], default=Reply.verbalized(0.3)) as server:
        server.script[sha] = [Reply.error(500), Reply.verbalized(0.9)]
        JudgeClient(server.base_url, "gpt-5.1", api_key="test", ...)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import math
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    status: int = 200  # 0: close the connection without answering
    body: Any = None  # dict -> JSON; bytes -> sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    @staticmethod
    def completion(
        content: str | None, top_logprobs: list[dict[str, Any]] | None = None, refusal: str | None = None
    ) -> Reply:
        """A chat completion; with ``top_logprobs`` the first token's candidates (content: the first one's token)."""
        logprobs = None
        if top_logprobs is not None:
            first = top_logprobs[0] if top_logprobs else {"token": "?", "logprob": 0.0}
            logprobs = {"content": [{**first, "top_logprobs": top_logprobs}]}
            content = content if content is not None else first["token"]
        message = {"role": "assistant", "content": content, "refusal": refusal}
        choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": "stop"}
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": "fake",
            "choices": [choice],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        return Reply(200, body)

    @staticmethod
    def logprobs(top: dict[str, float]) -> Reply:
        ranked = sorted(top.items(), key=lambda kv: -kv[1])
        return Reply.completion(
            None, [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in ranked]
        )

    @staticmethod
    def yes_no(p_defect: float, extra: dict[str, float] | None = None) -> Reply:
        top = {
            "Yes": math.log(max(p_defect, 1e-12)),
            "No": math.log(max(1 - p_defect, 1e-12)),
            **(extra or {}),
        }
        return Reply.logprobs(top)

    @staticmethod
    def verbalized(p: float, defects: Iterable[str] = ()) -> Reply:
        return Reply.completion(json.dumps({"defect_probability": p, "defects": list(defects)}))

    @staticmethod
    def text(content: str) -> Reply:
        return Reply.completion(content)

    @staticmethod
    def refusal(text: str = "I'm sorry, but I can't help with that.") -> Reply:
        return Reply.completion(None, refusal=text)

    @staticmethod
    def error(
        status: int,
        message: str = "scripted error",
        *,
        retry_after: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        headers = dict(headers or {})
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        body = {"error": {"message": message, "type": "error", "param": None, "code": status}}
        return Reply(status, body, headers)


def _image_bytes(body: dict[str, Any]) -> bytes | None:
    """The first data-URL image of a chat-completions request body."""
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == "image_url":
                url = part.get("image_url", {}).get("url", "")
                if url.startswith("data:") and "," in url:
                    return base64.b64decode(url.split(",", 1)[1])
    return None


def image_sha256(body: dict[str, Any]) -> str | None:
    """sha256 of the request's data-URL image (None without one)."""
    data = _image_bytes(body)
    return None if data is None else hashlib.sha256(data).hexdigest()


def image_mean(body: dict[str, Any]) -> float:
    """Mean grey level / 255 of the request's data-URL image."""
    import numpy as np
    from PIL import Image

    data = _image_bytes(body)
    if data is None:
        raise ValueError("no image in the request")
    with Image.open(io.BytesIO(data)) as image:
        return float(np.asarray(image.convert("L"), dtype=np.float64).mean()) / 255.0


def judge_like(body: dict[str, Any]) -> Reply:
    """Answer as the judge would: logprobs, or verbalized JSON when the request asks for no logprobs."""
    p = image_mean(body)
    if body.get("logprobs"):
        return Reply.yes_no(p)
    return Reply.verbalized(p, ["noise"] if p > 0.5 else [])


class FakeOpenAIServer:
    def __init__(
        self,
        *,
        models: Iterable[str] = ("defect-judge",),
        default: Reply | Callable[[dict[str, Any]], Reply] = judge_like,
        hold_after: int | None = None,
        api_key: str | None = None,
    ):
        self.models = list(models)
        self.default = default
        self.hold_after = hold_after
        self.api_key = api_key
        self.queue: list[Reply] = []
        self.script: dict[str, list[Reply]] = {}
        self.tokens: dict[str, list[int]] = {}
        self.bodies: list[dict[str, Any]] = []
        self.received: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._aborted = threading.Event()
        self._n_admitted = 0
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def chat_requests(self) -> int:
        return len(self.bodies)

    @property
    def total_answered(self) -> int:
        return sum(self.answered.values())

    def __enter__(self) -> FakeOpenAIServer:
        fake = self

        class Handler(_Handler):
            server_state = fake

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort_held()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def release(self) -> None:
        """Answer the held requests and stop holding."""
        self.hold_after = None
        self._released.set()

    def abort_held(self) -> None:
        """Drop the held requests without an answer, and stop holding new ones."""
        self.hold_after = None
        self._aborted.set()
        self._released.set()

    def kill_when_held(
        self, process: subprocess.Popen, records: Path, n_records: int, timeout: float = 180
    ) -> None:
        """SIGKILL ``process`` (a harness scoring against this server with ``hold_after=n_records``) once its
        ``n_records`` answered items are lines of ``records`` and its next requests are held in flight; then drop
        the held requests, which die with their caller unanswered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            lines = records.read_text().splitlines() if records.exists() else []
            in_flight = sum(self.received.values()) - self.total_answered
            if len(lines) == n_records and in_flight > 0:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()[1].decode()[-2000:]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        self.abort_held()

    def start_and_kill(self, command: list[str], cwd: Path, records: Path, n_records: int) -> int:
        """Run a harness `command` against this server (``hold_after=n_records``), SIGKILL it with requests in
        flight (kill_when_held), check that exactly the n_records answers were kept; the requests it had in flight."""
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.kill_when_held(process, records, n_records)
        killed_in_flight = sum(self.received.values()) - self.total_answered
        assert self.total_answered == n_records and killed_in_flight >= 1
        return killed_in_flight

    def _admit(self, body: dict[str, Any]) -> str:
        """Record a chat request; returns its image's sha256 ("" without one)."""
        sha = image_sha256(body) or ""
        with self._lock:
            self.bodies.append(body)
            self.received[sha] += 1
        return sha

    def _held(self) -> bool:
        """Whether this request waits for release(); True when it was aborted meanwhile."""
        with self._lock:
            if self.hold_after is None or self._n_admitted < self.hold_after:
                self._n_admitted += 1
                return False
        self._released.wait(timeout=120)
        return self._aborted.is_set()

    def _reply_for(self, sha: str, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self.queue:
                return self.queue.pop(0)
            script = self.script.get(sha)
            if script:
                return script.pop(0) if len(script) > 1 else script[0]
        return self.default(body) if callable(self.default) else self.default


class _Handler(BaseHTTPRequestHandler):
    server_state: FakeOpenAIServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass  # quiet tests

    def _send(self, reply: Reply) -> None:
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client may have timed out
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    def _authorised(self) -> bool:
        key = self.server_state.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._send(Reply.error(401, "Incorrect API key provided"))
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        if not self._authorised():
            return
        if self.path.rstrip("/") == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                for m in self.server_state.models
            ]
            self._send(Reply(200, {"object": "list", "data": data}))
        else:
            self._send(Reply.error(404, f"no route {self.path}"))

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not self._authorised():
            return
        state = self.server_state
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(Reply.error(400, "body is not JSON"))
            return
        if self.path == "/tokenize":
            if not state.tokens:  # a hosted API: no vLLM tokenizer, so the client reads the top-k logprobs
                self._send(Reply.error(404, f"no route {self.path}"))
                return
            self._send(Reply(200, {"tokens": state.tokens.get(body.get("prompt"), [1, 2])}))
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(Reply.error(404, f"no route {self.path}"))
            return
        sha = state._admit(body)
        if body.get("model") not in state.models:
            self._send(Reply.error(404, f"The model `{body.get('model')}` does not exist."))
            return
        if state._held():
            self.close_connection = True  # the caller is gone: no answer, not counted as answered
            return
        reply = state._reply_for(sha, body)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status == 0:  # a crashed server: the connection closes without an answer
            self.close_connection = True
            return
        self._send(reply)
        if reply.status == 200:
            with state._lock:
                state.answered[sha] += 1


def write_judge_config(folder: Path, name: str, **fields: Any) -> Path:
    """A judge config file (baselines/*.yaml's schema) for a judge the fake server plays: model fake-judge, short
    timeouts; `fields` add or override keys."""
    body = {"name": name, "model": "fake-judge", "max_concurrency": 4, "timeout": 10, "max_retries": 2, **fields}
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return path
