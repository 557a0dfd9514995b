"""The launcher of `python -m vlm_judge.serve --model DIR`: the judge behind vLLM's OpenAI-compatible API.

Runs the vLLM command of vlm_judge.serving.vllm_command (pixel bounds, token budget, LoRA, the judge prompt served
server-side, classify mode) under the supervision of vlm_judge.serving.supervisor (signals, bounded stop, exit codes).
It waits until the endpoint lists the served model (vlm_judge.judges.probe), sends one warm-up request through
the judge client on a 1024x1024 image (the first request pays for lazy initialisation), prints
`vlm_judge.serve: ready at URL (model NAME)` on stdout, then runs until vLLM exits or a signal comes.

Arguments it does not know (e.g. --api-key, --gpu-memory-utilization, --tensor-parallel-size) go to vLLM as they
are.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import tempfile
import time

from vlm_judge.serving.gate import DEFAULT_DRAIN_TIMEOUT_S, DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS
from vlm_judge.serving.supervisor import (
    EXIT_CODES_HELP,
    EXIT_KILLED,
    EXIT_STOPPED,
    EXIT_VLLM_FAILED,
    ServeError,
    VllmProcess,
)
from vlm_judge.serving.vllm_command import (
    DEFAULT_PORT,
    DEFAULT_SERVED_NAME,
    DEFAULT_SHUTDOWN_TIMEOUT_S,
    extra_value,
    plan,
)
from vlm_judge.serving.vllm_entry import DEFAULT_HTTP_SHUTDOWN_TIMEOUT_S

# Warm-up answers that still prove the server ran the model (an untrained judge may answer off the protocol).
ANSWERED_KINDS = {"ProtocolError", "AnswerNotFoundError", "RefusalError"}


def wait_ready(url: str, served: str, process: VllmProcess, timeout: float, api_key: str | None) -> None:
    """Probe the endpoint until it lists `served`; raise ServeError if vLLM exits, a signal comes or time runs out."""
    from vlm_judge.judges import EndpointError, JudgeSpec, probe

    spec = JudgeSpec(base_url=url, model=served, api_key=api_key)
    deadline = time.monotonic() + timeout
    while True:
        if process.stop_requested:
            raise ServeError("interrupted before the server was ready")
        code = process.poll()
        if code is not None:
            raise ServeError(f"vLLM exited with code {code} before it was ready (its log is above)")
        if time.monotonic() > deadline:
            raise ServeError(f"vLLM was not ready after {timeout:g} s")
        try:
            if probe(spec, timeout=5.0):  # [] while /models does not answer yet
                return
        except EndpointError:  # not listening yet, or the model not listed yet
            pass
        time.sleep(1.0)


def warm_up(
    url: str,
    served: str,
    api_key: str | None,
    prompt: str | None = None,
    timeout: float = 600.0,
    mode: str = "generate",
) -> float:
    """One judge request through the client, as clients send it (classify: /classify), on a 1024x1024 image."""
    import numpy as np
    from PIL import Image

    from vlm_judge.client import JudgeClient
    from vlm_judge.judges import JudgeSpec

    pixels = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    spec = JudgeSpec(
        base_url=url,
        model=served,
        api_key=api_key,
        prompt=prompt,
        endpoint="classify" if mode == "classify" else "chat",
        # Both answer words' logprobs whatever the model ranks first (the server's own tokenizer, /tokenize).
        exact_answer_logprobs=mode != "classify",
        max_concurrency=1,
        timeout=timeout,
        max_retries=0,
    )
    start = time.perf_counter()
    with JudgeClient.from_spec(spec) as client:
        result = client.score(Image.fromarray(pixels), "warm-up")
    if not result.ok and result.error_kind not in ANSWERED_KINDS:
        raise ServeError(f"warm-up request failed: {result.error}")
    return time.perf_counter() - start


def _api_key(extra: list[str]) -> str | None:
    return extra_value(extra, "--api-key") or os.environ.get("VLLM_API_KEY")


def drained_cleanly(report_path: str, code: int) -> int:
    """The exit code once the drain's report (vlm_judge.serving.gate) is read: accepted requests still open at the
    end of the drain window make a clean stop (0) a forced one (4)."""
    try:
        with open(report_path, encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, json.JSONDecodeError):
        return code  # no drain happened (vLLM stopped before it was ready, or crashed)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(report_path)
    if report.get("cut_at_timeout") and code == EXIT_STOPPED:
        print(
            f"vlm_judge.serve: {report['cut_at_timeout']} accepted request(s) were still open when the "
            f"{report['drain_timeout_s']:g} s drain window (--drain-timeout) ended; exit {EXIT_KILLED}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_KILLED
    return code


def run(args: argparse.Namespace, extra: list[str]) -> int:
    if args.drain_timeout <= 0:
        raise ServeError(f"--drain-timeout must be > 0, got {args.drain_timeout:g}")
    fd, args.drain_report = tempfile.mkstemp(prefix="vlm-judge-drain-", suffix=".json")
    os.close(fd)
    os.unlink(args.drain_report)  # the gate writes it when it drains
    serve_plan = plan(args, extra)
    for note in serve_plan.notes:
        print(f"vlm_judge.serve: {note}", file=sys.stderr, flush=True)
    if args.print_command:
        print(
            json.dumps(
                {
                    "command": serve_plan.command,
                    "url": serve_plan.url,
                    "model": serve_plan.served_model_name,
                    # what the launcher sets on top of the inherited environment
                    "env": {k: v for k, v in serve_plan.env.items() if os.environ.get(k) != v},
                }
            )
        )
        return 0

    print(
        f"vlm_judge.serve: starting vLLM for {args.model} as {serve_plan.served_model_name!r} "
        f"(pixels {serve_plan.min_pixels}..{serve_plan.max_pixels}, max-model-len {serve_plan.max_model_len})",
        file=sys.stderr,
        flush=True,
    )
    # The engine's drain, then the HTTP server's wait for open connections, then --kill-after for the rest.
    shutdown_timeout = float(extra_value(serve_plan.command, "--shutdown-timeout") or 0)
    process = VllmProcess(
        serve_plan.command,
        serve_plan.env,
        args.drain_timeout + shutdown_timeout + args.http_shutdown_timeout + args.kill_after,
    )
    print(f"vlm_judge.serve: vLLM pid {process.start()}", file=sys.stderr, flush=True)
    api_key = _api_key(extra)
    start = time.monotonic()
    try:
        wait_ready(serve_plan.url, serve_plan.served_model_name, process, args.ready_timeout, api_key)
        if not args.no_warmup:
            seconds = warm_up(
                serve_plan.url, serve_plan.served_model_name, api_key, args.prompt, mode=args.mode
            )
            print(f"vlm_judge.serve: warm-up request took {seconds:.1f} s", file=sys.stderr, flush=True)
    except Exception as exc:  # ServeError, or e.g. the warm-up's connection dropped because vLLM died
        exited = process.poll()
        result, code = process.stop(signal.SIGTERM)
        if process.stop_requested:
            print(
                f"vlm_judge.serve: interrupted before ready; vLLM stopped (code {result.code})",
                file=sys.stderr,
            )
            return code
        if exited is not None:
            raise ServeError(
                f"vLLM exited with code {exited} before it was ready (its log is above)", EXIT_VLLM_FAILED
            ) from None
        raise ServeError(
            str(exc) if isinstance(exc, ServeError) else f"start-up failed: {type(exc).__name__}: {exc}"
        ) from None

    process.drain_on_stop(signal.SIGUSR1)  # the request gate's drain, then vLLM's own shutdown
    print(
        f"vlm_judge.serve: ready at {serve_plan.url} (model {serve_plan.served_model_name}) "
        f"after {time.monotonic() - start:.0f} s",
        flush=True,
    )
    return drained_cleanly(args.drain_report, process.supervise())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vlm_judge.serve",
        description="Serve the defect judge with vLLM's OpenAI-compatible API. Images are accepted inline only "
        "(data URLs) unless vLLM's --allowed-media-domains HOST... allows links; local files never; a bad image is a "
        "4xx. --api-key KEY (or VLLM_API_KEY) requires 'Authorization: Bearer KEY' on every request. Unknown "
        "arguments go to vLLM (e.g. --shutdown-timeout N: how long the engine drains in-flight requests after the "
        f"request drain, default here {DEFAULT_SHUTDOWN_TIMEOUT_S}; 0 = vLLM's abort).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="merged judge / HF Qwen2-VL model directory")
    parser.add_argument(
        "--host", default="127.0.0.1", help="bind address (0.0.0.0 to expose; default loopback)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0 = any free port)")
    parser.add_argument(
        "--served-model-name",
        default=None,
        help=f"name clients send as `model` (default {DEFAULT_SERVED_NAME})",
    )
    parser.add_argument(
        "--lora-adapter", default=None, help="PEFT LoRA adapter dir to serve on top of --model"
    )
    parser.add_argument(
        "--prompt",
        default=None,
        help="judge prompt file (default prompts/defect_judge.yaml): served to requests that carry only the image",
    )
    parser.add_argument(
        "--mode",
        choices=("generate", "classify"),
        default="generate",
        help="generate: chat completions with logprobs (default; an image-only request gets p_defect in its "
        "answer); classify: vLLM's /classify, whose labels are every single-token variant of the answer words "
        "(each answer names them: labels, label), and carries p_defect = the sum of the defect-word labels' probabilities "
        "= P(Yes)/(P(Yes)+P(No)) over all variants, the logprob path's rule",
    )
    parser.add_argument("--max-model-len", type=int, default=None, help="default: prompt + one image + 256")
    parser.add_argument("--max-logprobs", type=int, default=20, help="largest top_logprobs a request may ask")
    parser.add_argument(
        "--dtype", default=None, help="vLLM --dtype (default: the checkpoint's, from config.json)"
    )
    parser.add_argument("--cpu-kv-cache-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE unless set")
    parser.add_argument(
        "--cpu-reserved-cores",
        type=int,
        default=None,
        help="on CPU, cores kept free of the engine's threads for the API server (VLLM_CPU_NUM_OF_RESERVED_CPU); "
        "default: 0 on machines with <= 4 usable cores (the forward pass gets them all), else vLLM's own (1)",
    )
    parser.add_argument("--compile", action="store_true", help="on CPU, let vLLM compile (slower start-up)")
    parser.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to wait for readiness")
    parser.add_argument(
        "--kill-after",
        type=float,
        default=30.0,
        help="seconds vLLM gets to exit after SIGINT/SIGTERM, on top of --shutdown-timeout and "
        "--http-shutdown-timeout, before its process group is SIGKILLed (exit code 4)",
    )
    parser.add_argument(
        "--http-shutdown-timeout",
        type=int,
        default=DEFAULT_HTTP_SHUTDOWN_TIMEOUT_S,
        help="on SIGTERM, seconds vLLM's HTTP server waits for open connections after the engine stopped",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT_S,
        help="on SIGTERM, seconds the requests already accepted get to be answered (new ones get 503, /health "
        f"fails) before vLLM shuts down (default {DEFAULT_DRAIN_TIMEOUT_S:g}: a full batch at concurrency 8 of "
        "1024x1024 images on 2 CPU cores takes ~3 s; 16 on a GPU, well under 1 s)",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        default=DEFAULT_MAX_IMAGE_BYTES,
        help=f"largest image a request may carry, in bytes (default {DEFAULT_MAX_IMAGE_BYTES}); larger: HTTP 413",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help=f"largest width x height (default {DEFAULT_MAX_IMAGE_PIXELS}); larger (a decompression bomb): HTTP 413",
    )
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up request")
    parser.add_argument(
        "--print-command",
        action="store_true",
        help="print the vLLM command (and the environment variables the launcher adds) as JSON and exit",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    try:
        return run(args, extra)
    except ServeError as exc:
        print(f"vlm_judge.serve: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code

