"""Stop-under-load benchmark: does `kill PID` (SIGTERM) stop the judge server without losing accepted work?

    python scripts/bench_stop.py [--model DIR] [--cycles 10] [--concurrency 8] [--requests 24] [--output F]
                                 [--serve-args "--drain-timeout 30"]

Each cycle starts `python -m vlm_judge.serve` (through vlm_judge.serving.judge_server.JudgeServer), has `--concurrency`
senders post image-only judge requests for distinct 1024x1024 images back to back (raw HTTP, no retries, so each
request's fate is seen), sends SIGTERM to the launcher at the first answer, and records how every request ended:
answered (200; `answered_during_drain` = sent before the signal, answered after it), refused cleanly (503
while draining, or no listener any more: the client retries elsewhere) or **lost** (accepted, then the connection
closed without an answer, or a 5xx); the seconds from the signal to the launcher's exit and its exit code (0:
drained and stopped by itself; 4: something forced, see `python -m vlm_judge.serve --help`); the gate's drain line;
tracebacks in the server's log; whether any vLLM process survived. Prints one JSON object on stdout; progress goes
to stderr. Without --model the tiny embedded model is built in a temporary folder.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench_serving import judge_model_dir, print_report  # noqa: E402 (scripts/ is on the path when run as a script)


def log(message: str) -> None:
    print(f"[bench_stop] {message}", file=sys.stderr, flush=True)


def make_images(folder: Path, count: int) -> list[str]:
    """`count` distinct 1024x1024 noise PNGs (1369 visual tokens each)."""
    import numpy as np
    from PIL import Image

    paths = []
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
        paths.append(str(path))
    return paths


def group_alive(pgid: int | None, wait_s: float = 5.0) -> bool:
    """True if a process of vLLM's process group is still there after `wait_s` seconds."""
    if pgid is None:
        return False
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        if time.monotonic() > deadline:
            return True
        time.sleep(0.2)


def request_bodies(images: list[str], model: str) -> list[bytes]:
    """Image-only judge requests, encoded once (the senders only post bytes: no client-side GIL contention)."""
    from vlm_judge.images import to_data_url
    from vlm_judge.protocol import image_only_messages

    return [json.dumps({"model": model, "messages": image_only_messages(to_data_url(p))}).encode() for p in images]


def cycle(model_dir: Path, bodies: list[bytes], concurrency: int, serve_args: list[str]) -> dict:
    """One server, `concurrency` senders posting judge requests back to back (no retries), SIGTERM to the launcher
    at the first answer; every request's outcome: answered (200), refused cleanly (503 while draining, or no
    listener any more), or lost (a connection that was accepted and then closed without an answer)."""
    import httpx

    from vlm_judge.serving.judge_server import JudgeServer

    server = JudgeServer(model_dir, extra_args=serve_args)
    server.start()
    assert server.process is not None
    url = f"{server.base_url}/chat/completions"
    signalled: list[float] = []
    outcomes: list[tuple[str, bool]] = []  # (outcome, sent before the signal and answered after it)
    lock = threading.Lock()
    pending = iter(range(10**6))

    def sender() -> None:
        with httpx.Client(timeout=120) as http:
            for index in pending:
                before = not signalled
                try:
                    response = http.post(url, content=bodies[index % len(bodies)], headers=JSON)
                    status = response.status_code
                    outcome = {200: "answered", 503: "refused_503"}.get(status, f"http_{status}")
                except httpx.ConnectError:
                    outcome = "refused_connect"  # nothing listens any more: never accepted
                except httpx.HTTPError as exc:
                    outcome = f"lost_{type(exc).__name__}"
                with lock:
                    outcomes.append((outcome, before and bool(signalled)))  # answered during the drain
                    if outcome == "answered" and not signalled:
                        signalled.append(time.monotonic())
                        server.process.send_signal(signal.SIGTERM)
                if outcome != "answered":
                    return

    workers = [threading.Thread(target=sender, daemon=True) for _ in range(concurrency)]
    for worker in workers:
        worker.start()
    try:
        code = server.process.wait(timeout=300)
        launcher_exit = time.monotonic()
    finally:
        if server.process.poll() is None:
            server.stop(timeout=5)
    for worker in workers:
        worker.join(timeout=60)
    counts = collections.Counter(
        outcome + ("_during_drain" if outcome == "answered" and drained else "") for outcome, drained in outcomes
    )
    log_text = server.log_text()
    drain = next((line for line in log_text.splitlines() if "drained in" in line), None)
    lost = sum(n for k, n in counts.items() if k.startswith("lost_") or k.startswith("http_5"))
    return {
        "startup_s": round(server.startup_s or 0.0, 1),
        "stop_s": round(launcher_exit - signalled[0], 2) if signalled else None,
        "exit_code": code,
        "requests": dict(counts),
        "lost": lost,
        "drain": drain.split("vlm_judge.serve: ", 1)[-1] if drain else None,
        "tracebacks_in_log": log_text.count("Traceback"),
        "engine_force_killed": "force killing remaining process" in log_text,  # vLLM's own teardown bound
        "vllm_group_left": group_alive(server.vllm_pid),
    }


JSON = {"Content-Type": "application/json"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="judge model dir (default: build the tiny model)")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=24, help="distinct images the senders cycle through")
    parser.add_argument("--serve-args", default="", help="extra arguments for python -m vlm_judge.serve")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    model_dir = judge_model_dir(args.model, work)
    images = make_images(work, args.requests)
    bodies = request_bodies(images, "defect-judge")
    serve_args = shlex.split(args.serve_args)
    cycles = []
    for index in range(args.cycles):
        result = cycle(model_dir, bodies, args.concurrency, serve_args)
        cycles.append(result)
        log(f"cycle {index + 1}/{args.cycles}: {json.dumps(result)}")
    stops = [c["stop_s"] for c in cycles if c["stop_s"] is not None]
    report = {
        "model": str(model_dir) if args.model else "tiny embedded Qwen2-VL (random weights, float32)",
        "serve_args": serve_args,
        "concurrency": args.concurrency,
        "requests_per_cycle": args.requests,
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cycles": cycles,
        "summary": {
            "stop_s": {
                "min": min(stops, default=None),
                "median": round(statistics.median(stops), 2) if stops else None,
                "max": max(stops, default=None),
            },
            "exit_codes": dict(collections.Counter(str(c["exit_code"]) for c in cycles)),
            "answered_during_drain": sum(c["requests"].get("answered_during_drain", 0) for c in cycles),
            "lost": sum(c["lost"] for c in cycles),
            "tracebacks_in_log": sum(c["tracebacks_in_log"] for c in cycles),
            "cycles_with_engine_force_killed": sum(c["engine_force_killed"] for c in cycles),
            "cycles_with_vllm_left": sum(c["vllm_group_left"] for c in cycles),
        },
    }
    shutil.rmtree(work, ignore_errors=True)
    print_report(report, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
