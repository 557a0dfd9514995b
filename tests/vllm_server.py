"""Server helpers for tests.

- running_judge_server(model_dir, lora_adapter=None, served_model_name="defect-judge") -> base_url: the real
  judge server (`python -m vlm_judge.serve`, vLLM on CPU) on a free loopback port, ready and warmed up:

      from vllm_server import running_judge_server
      with running_judge_server(tiny_model_dir) as base_url:   # "http://127.0.0.1:PORT/v1"
          JudgeClient(base_url, "defect-judge", ...)

  JudgeServer is the same with handles (kill() to crash it, log_text()). Start-up takes ~40-110 s and ~3 GB.

- FakeChatServer: a small threaded OpenAI-compatible server (GET /v1/models, POST /v1/chat/completions,
  POST /tokenize) for fast client tests. By default it answers like the judge, with p_defect = the mean grey
  level of the image / 255 (so a test knows what each image must score); `script` replaces the next answers.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from vlm_judge.server_process import READY_MARK, JudgeServer, running_judge_server  # noqa: F401
from vlm_judge.vllm_command import free_port  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------- fake server


@dataclass
class Reply:
    status: int = 200  # 0: close the connection without answering
    body: Any = None  # dict -> JSON; bytes -> sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def logprobs_reply(p_defect: float, extra: dict[str, float] | None = None) -> Reply:
    """The first answer token's top logprobs as vLLM returns them, with P(Yes)/(P(Yes)+P(No)) = p_defect."""
    top = {"Yes": math.log(max(p_defect, 1e-12)), "No": math.log(max(1 - p_defect, 1e-12)), **(extra or {})}
    return completion_reply(None, [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()])


def completion_reply(
    content: str | None, top_logprobs: list[dict] | None = None, refusal: str | None = None
) -> Reply:
    logprobs = None
    if top_logprobs is not None:
        first = top_logprobs[0] if top_logprobs else {"token": "?", "logprob": 0.0}
        logprobs = {"content": [{**first, "top_logprobs": top_logprobs}]}
        content = content if content is not None else first["token"]
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": refusal},
                "logprobs": logprobs,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return Reply(200, body)


def error_reply(status: int, message: str = "scripted error", headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status, {"error": {"message": message, "type": "error", "param": None, "code": status}}, headers or {}
    )


def image_mean(body: dict[str, Any]) -> float:
    """Mean grey level / 255 of the request's data-URL image."""
    import numpy as np
    from PIL import Image

    for message in body.get("messages", []):
        for part in message.get("content") if isinstance(message.get("content"), list) else []:
            if part.get("type") == "image_url":
                data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                with Image.open(io.BytesIO(data)) as image:
                    return float(np.asarray(image.convert("L"), dtype=np.float64).mean()) / 255.0
    raise ValueError("no image in the request")


def judge_like(body: dict[str, Any]) -> Reply:
    """Answer as the judge would: logprobs, or verbalized JSON when the request carries no logprobs."""
    p = image_mean(body)
    if body.get("logprobs"):
        return logprobs_reply(p)
    return completion_reply(json.dumps({"defect_probability": p, "defects": ["noise"] if p > 0.5 else []}))


class FakeChatServer:
    def __init__(self, responder: Callable[[dict[str, Any]], Reply] = judge_like, models=("defect-judge",)):
        self.responder = responder
        self.models = list(models)
        self.script: list[Reply] = []  # consumed first, one per chat request, in arrival order
        self.bodies: list[dict[str, Any]] = []
        self.tokens: dict[str, list[int]] = {}  # /tokenize answers (text -> ids)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def chat_requests(self) -> int:
        return len(self.bodies)

    def __enter__(self) -> FakeChatServer:
        fake = self

        class Handler(_FakeHandler):
            server_state = fake

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def _reply_for(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.bodies.append(body)
            scripted = self.script.pop(0) if self.script else None
        return scripted or self.responder(body)


class _FakeHandler(BaseHTTPRequestHandler):
    server_state: FakeChatServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

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

    def do_GET(self) -> None:  # noqa: N802
        if self.path.rstrip("/") == "/v1/models":
            self._send(
                Reply(
                    200,
                    {
                        "object": "list",
                        "data": [{"id": m, "object": "model"} for m in self.server_state.models],
                    },
                )
            )
        else:
            self._send(error_reply(404, f"no route {self.path}"))

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        state = self.server_state
        if self.path == "/tokenize":
            self._send(Reply(200, {"tokens": state.tokens.get(body.get("prompt"), [1, 2])}))
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(error_reply(404, f"no route {self.path}"))
            return
        if body.get("model") not in state.models:
            state._reply_for(body)
            self._send(error_reply(404, f"The model `{body.get('model')}` does not exist."))
            return
        reply = state._reply_for(body)
        if reply.delay:
            time.sleep(reply.delay)
        if reply.status == 0:  # a crashed server: the connection closes without an answer
            self.close_connection = True
            return
        self._send(reply)
