"""Stop-under-load benchmark: how long `kill PID` (SIGTERM) takes to stop the judge server while requests are in
flight, and whether anything is left behind.

    python scripts/bench_stop.py [--model DIR] [--cycles 10] [--concurrency 4] [--requests 24] [--output F]
                                 [--serve-args "--shutdown-timeout 0"]

Each cycle starts `python -m vlm_judge.serve` (through vlm_judge.server_process.JudgeServer, as the tests and the
pipeline do), scores distinct 1024x1024 images with JudgeClient at the given concurrency (retries on, as in
production), sends SIGTERM to the launcher as soon as the first result arrives, and records: seconds from the
signal to the launcher's exit, its exit code (0 stopped on request, 4 killed after the grace: see
`python -m vlm_judge.serve --help`), seconds until the client's batch returned, how the batch's items ended
(scored / error kind), and whether any process of vLLM's process group survived. Prints one JSON object on
stdout; progress goes to stderr. Without --model the tiny embedded model is built in a temporary folder.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench_serving import judge_model_dir  # noqa: E402 (scripts/ is on the path when run as a script)


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


def cycle(model_dir: Path, images: list[str], concurrency: int, serve_args: list[str]) -> dict:
    from vlm_judge.client import JudgeClient
    from vlm_judge.server_process import JudgeServer

    server = JudgeServer(model_dir, extra_args=serve_args)
    server.start()
    assert server.process is not None
    signalled: list[float] = []

    def stop_after_first(_index: int, _result: object) -> None:
        if not signalled:
            signalled.append(time.monotonic())
            server.process.send_signal(signal.SIGTERM)

    outcome: dict = {}

    def score() -> None:
        with JudgeClient(
            server.base_url, server.served_model_name, max_concurrency=concurrency, timeout=60, max_retries=3
        ) as client:
            results = client.score_batch(images, on_result=stop_after_first)
        outcome["batch_returned"] = time.monotonic()
        outcome["results"] = results

    worker = threading.Thread(target=score, daemon=True)
    worker.start()
    try:
        while not signalled and worker.is_alive():
            time.sleep(0.05)
        code = server.process.wait(timeout=300)
        launcher_exit = time.monotonic()
    finally:
        if server.process.poll() is None:
            server.stop(timeout=5)
    worker.join(timeout=120)
    results = outcome.get("results") or []
    ends = collections.Counter(
        "scored" if r.ok else (r.error_kind or "?") for r in results
    )  # AnswerNotFoundError is a scored request of the untrained tiny model (no Yes/No in its top 20)
    stop_line = next(
        (line for line in server.log_text().splitlines() if "after the stop signal" in line), None
    )
    return {
        "startup_s": round(server.startup_s or 0.0, 1),
        "stop_s": round(launcher_exit - signalled[0], 2) if signalled else None,
        "exit_code": code,
        "batch_returned_after_signal_s": round(outcome["batch_returned"] - signalled[0], 2)
        if signalled and "batch_returned" in outcome
        else None,
        "items": dict(ends),
        "vllm_group_left": group_alive(server.vllm_pid),
        "launcher_line": stop_line,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="judge model dir (default: build the tiny model)")
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=24, help="images in each cycle's batch")
    parser.add_argument("--serve-args", default="", help="extra arguments for python -m vlm_judge.serve")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    model_dir = judge_model_dir(args.model, work)
    images = make_images(work, args.requests)
    serve_args = shlex.split(args.serve_args)
    cycles = []
    for index in range(args.cycles):
        result = cycle(model_dir, images, args.concurrency, serve_args)
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
            "cycles_with_vllm_left": sum(c["vllm_group_left"] for c in cycles),
        },
    }
    with contextlib.suppress(OSError):
        import shutil

        shutil.rmtree(work)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
