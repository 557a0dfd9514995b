"""The judge server as a child process: start `python -m vlm_judge.serve`, wait for its ready line, stop it.

Used by the main job's evaluate stage (scripts/evaluate_judges.py) and the test suite.

    with running_judge_server("models/judge") as base_url:   # "http://127.0.0.1:PORT/v1"
        JudgeClient(base_url, "defect-judge").score_batch(paths)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlm_judge.serving.vllm_command import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
READY_MARK = "vlm_judge.serve: ready at "


class JudgeServer:
    """`python -m vlm_judge.serve` in the background; start() returns once it printed its ready line."""

    def __init__(
        self,
        model_dir: str | Path,
        lora_adapter: str | Path | None = None,
        served_model_name: str = "defect-judge",
        *,
        extra_args: list[str] | None = None,
        ready_timeout: float = 600.0,
    ):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.served_model_name = served_model_name
        self.ready_timeout = ready_timeout
        self.args = [
            sys.executable,
            "-m",
            "vlm_judge.serve",
            "--model",
            str(model_dir),
            "--port",
            str(self.port),
            "--served-model-name",
            served_model_name,
            *(["--lora-adapter", str(lora_adapter)] if lora_adapter else []),
            *(extra_args or []),
        ]
        self.log_path = Path(tempfile.mkstemp(prefix="judge-server-", suffix=".log")[1])
        self.process: subprocess.Popen | None = None
        self.vllm_pid: int | None = None
        self.startup_s: float | None = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def start(self) -> str:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        start = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.args,
                cwd=REPO_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        while True:
            text = self.log_text()
            if READY_MARK in text:
                break
            if self.process.poll() is not None or time.monotonic() - start > self.ready_timeout:
                self.stop()
                tail = "\n".join(text.splitlines()[-40:])
                raise RuntimeError(
                    f"judge server did not become ready (exit code {self.process.returncode}):\n{tail}"
                )
            time.sleep(0.5)
        self.startup_s = time.monotonic() - start
        for line in text.splitlines():
            if line.startswith("vlm_judge.serve: vLLM pid "):
                self.vllm_pid = int(line.split()[-1])
        return self.base_url

    def kill(self) -> None:
        """Crash the server: SIGKILL to vLLM's whole process group (no graceful shutdown)."""
        if self.vllm_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.vllm_pid, signal.SIGKILL)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM the launcher (it forwards to vLLM and waits); SIGKILL everything left after `timeout`."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.kill()  # in case the launcher died without taking vLLM down
        return self.process.returncode

    def __enter__(self) -> JudgeServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_judge_server(
    model_dir: str | Path,
    lora_adapter: str | Path | None = None,
    served_model_name: str = "defect-judge",
    **kwargs: Any,
) -> Iterator[str]:
    server = JudgeServer(model_dir, lora_adapter, served_model_name, **kwargs)
    server.start()
    try:
        yield server.base_url
    finally:
        server.stop()
