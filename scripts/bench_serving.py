"""Serving benchmark: the judge through vLLM (python -m vlm_judge.serve + JudgeClient) against a naive HF loop.

    python scripts/bench_serving.py [--model DIR] [--output bench.json]

Both score 1024x1024 images (native resolution, 1369 visual tokens each). Every request gets its own image, as in
production (a repeated image would come out of vLLM's multimodal and prefix caches and flatter it). The HF loop
scores one image at a time, as t2v_metrics / Q-Align do. vLLM is measured at concurrency 1, 4 and 16; for each:
throughput, latency mean/p50/p95, failed requests, and the client's own CPU time per request (CPU time of this
process during the run: decoding and validating the image, base64, JSON, HTTP; the server is another process).
Requests ask for the exact Yes/No log-probabilities (logprob_token_ids), so an untrained model whose answer falls
outside the top k does not count as a failure. Prints one JSON object on stdout; progress goes to stderr.

Per-stage breakdown (``stages`` of each vLLM run), means per request:
- ``client_encode_ms``: reading the file and building the data URL (vlm_judge.images.to_data_url), measured here;
- from the server's Prometheus ``/metrics`` (vLLM's own request histograms, differenced around the run):
  ``server_e2e_ms`` (arrival at the API server to the last token), ``engine_queue_ms`` (waiting for the
  scheduler), ``engine_inference_ms`` (prefill + decode in the engine); ``server_preprocess_ms`` =
  e2e - queue - inference: chat rendering, image decode, the HF image processor, multimodal hashing, IPC;
- ``http_and_client_ms`` = the client's latency - server e2e (JSON, base64, HTTP, the client's event loop).

``--sweep`` measures vLLM options on and off (SWEEP below), each in its own server, at concurrency 1 and 4, and
skips nothing else: the HF loop runs once, on the same images, so every ratio comes from one run.

Without --model, the tiny embedded model is built in a temporary folder. With --base-url, a running server is
measured instead of starting one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from vlm_judge.metrics import latency_stats  # noqa: E402 (after the path set-up)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def latency_summary(latencies_ms: list[float]) -> dict[str, float]:
    """The library's latency statistics (vlm_judge.metrics), under this benchmark's short JSON keys."""
    stats = latency_stats(latencies_ms)
    return {key: round(stats[f"latency_{key}_ms"], 1) for key in ("mean", "p50", "p95")}


# vLLM options measured on by --sweep (name -> extra vLLM flags); "off" is the default run every bench makes.
SWEEP: dict[str, list[str]] = {
    "mm_processor_cache_off": ["--mm-processor-cache-gb", "0"],  # unique images: hashing buys nothing
    "api_server_count_2": ["--api-server-count", "2"],  # parallel input processing
    # vLLM's own CPU thread binding: one core kept for the API server (the launcher's default on <= 4 cores is 0)
    "cpu_reserved_cores_1": ["--cpu-reserved-cores", "1"],
}
STAGE_METRICS = {
    "server_e2e_ms": "vllm:e2e_request_latency_seconds",
    "engine_queue_ms": "vllm:request_queue_time_seconds",
    "engine_inference_ms": "vllm:request_inference_time_seconds",
    "engine_prefill_ms": "vllm:request_prefill_time_seconds",
}


def scrape_metrics(base_url: str) -> dict[str, float]:
    """Sum and count of vLLM's request histograms from /metrics (all label sets added up)."""
    import httpx

    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=30).text
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        name = name.split("{", 1)[0]
        if name.endswith(("_sum", "_count")) and name.rsplit("_", 1)[0] in STAGE_METRICS.values():
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def stage_breakdown(before: dict[str, float], after: dict[str, float], client_mean_ms: float) -> dict:
    stages: dict[str, float | None] = {}
    for key, metric in STAGE_METRICS.items():
        count = after.get(metric + "_count", 0.0) - before.get(metric + "_count", 0.0)
        total = after.get(metric + "_sum", 0.0) - before.get(metric + "_sum", 0.0)
        stages[key] = round(total / count * 1000, 1) if count else None
    if None not in (stages["server_e2e_ms"], stages["engine_queue_ms"], stages["engine_inference_ms"]):
        stages["server_preprocess_ms"] = round(
            stages["server_e2e_ms"] - stages["engine_queue_ms"] - stages["engine_inference_ms"], 1
        )
        stages["http_and_client_ms"] = round(client_mean_ms - stages["server_e2e_ms"], 1)
    return stages


def client_encode_ms(images: list[str]) -> float:
    from vlm_judge.images import to_data_url

    start = time.perf_counter()
    for image in images:
        to_data_url(image)
    return round((time.perf_counter() - start) * 1000 / len(images), 2)


def judge_model_dir(model: str | None, work: Path) -> Path:
    """The judge to benchmark: ``model``, or the tiny embedded model built under ``work``."""
    if model:
        return Path(model)
    from vlm_judge.embedded.tiny_model import make_tiny_model

    return make_tiny_model(work / "tiny")


def make_images(folder: Path, count: int, scenes: int = 16) -> list[str]:
    """`count` distinct 1024x1024 PNGs: smooth scenes plus noise (~3 MB each), each with its own noise patch."""
    import numpy as np
    from PIL import Image

    yy, xx = np.mgrid[0:1024, 0:1024] / 1024.0
    bases = []
    for k in range(scenes):
        scene = np.stack([np.sin(xx * (3 + k) + c) * np.cos(yy * (2 + c)) for c in range(3)], axis=-1)
        noise = np.random.default_rng(k).normal(0, 12, scene.shape)
        bases.append(np.clip((scene * 0.5 + 0.5) * 255 + noise, 0, 255).astype(np.uint8))
    paths = []
    for i in range(count):
        pixels = bases[i % scenes].copy()
        rng = np.random.default_rng(1000 + i)
        y, x = rng.integers(0, 1024 - 96, 2)
        pixels[y : y + 96, x : x + 96] = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
        path = folder / f"gen{i:04d}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
        paths.append(str(path))
    return paths


def bench_hf(model_dir: Path, images: list[str], warmup: str) -> tuple[dict, list[float]]:
    import torch

    from vlm_judge.modeling import load_model, load_processor, score_images

    processor = load_processor(model_dir)
    model = load_model(model_dir, dtype="float32")
    score_images(model, processor, [warmup], batch_size=1)
    latencies, scores = [], []
    start = time.perf_counter()
    for image in images:
        t0 = time.perf_counter()
        scores.extend(score_images(model, processor, [image], batch_size=1))
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - start
    result = {
        "images": len(images),
        "torch_threads": torch.get_num_threads(),
        "throughput_img_s": round(len(images) / elapsed, 3),
        "latency_ms": latency_summary(latencies),
    }
    return result, scores


def bench_vllm(
    base_url: str, model: str, images: list[str], warmup: list[str], concurrency: int, token_ids
) -> dict:
    from vlm_judge.client import JudgeClient

    with JudgeClient(
        base_url, model, max_concurrency=concurrency, timeout=300, max_retries=3, answer_token_ids=token_ids
    ) as client:
        client.score_batch(warmup[:concurrency])  # open the connections
        metrics_before = scrape_metrics(base_url)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        results = client.score_batch(images, [Path(p).name for p in images])
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        metrics_after = scrape_metrics(base_url)
    ok = [r for r in results if r.ok]
    failures = [r for r in results if not r.ok]
    stats = latency_summary([r.latency_ms for r in ok if r.latency_ms is not None])
    cpu_ms = cpu * 1000 / len(results)
    return {
        "requests": len(results),
        "failures": len(failures),
        "failure_examples": sorted({str(r.error) for r in failures})[:3],
        "retried_requests": sum(r.attempts > 1 for r in results),
        "throughput_img_s": round(len(ok) / wall, 3),
        "latency_ms": stats,
        "client_cpu_ms_per_request": round(cpu_ms, 2),
        # the client's own CPU per request against the time one request takes
        "client_overhead_frac": round(cpu_ms / stats["mean"], 4) if ok else None,
        "stages": {
            "client_encode_ms": client_encode_ms(images[:8]),
            **stage_breakdown(metrics_before, metrics_after, stats["mean"]),
        },
        "p_defect": {r.image: r.p_defect for r in results},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="judge model dir (default: build the tiny model)")
    parser.add_argument("--base-url", default=None, help="measure a running server instead of starting one")
    parser.add_argument("--served-model-name", default="defect-judge")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--requests", type=int, nargs="+", default=[32, 64, 200], help="requests per concurrency"
    )
    parser.add_argument(
        "--hf-images", type=int, default=16, help="images the HF loop scores (from the first run)"
    )
    parser.add_argument("--output", default=None, help="also write the JSON here")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help=f"measure the vLLM options {sorted(SWEEP)} on/off, each in its own server (same images)",
    )
    args = parser.parse_args(argv)
    if len(args.requests) != len(args.concurrency):
        parser.error("--requests needs one value per --concurrency")
    if args.hf_images > args.requests[0]:
        parser.error("--hf-images must not exceed the first run's --requests (the same images are compared)")

    from vlm_judge.client import fetch_answer_token_ids
    from vlm_judge.modeling import NATIVE_1024_MAX_PIXELS, visual_tokens

    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    model_dir = judge_model_dir(args.model, work)
    n_warmup = max(args.concurrency)
    log(f"making {sum(args.requests) + n_warmup} distinct 1024x1024 images in {work} ...")
    images = make_images(work, sum(args.requests) + n_warmup)
    warmup, images = images[:n_warmup], images[n_warmup:]
    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
        },
        "model": str(model_dir) if args.model else "tiny embedded Qwen2-VL (random weights, float32)",
        "image": {
            "size": [1024, 1024],
            "visual_tokens": visual_tokens(1024, 1024, 3136, NATIVE_1024_MAX_PIXELS),
        },
    }

    def run_vllm(extra_args: list[str]) -> tuple[dict, float | None]:
        server = None
        base_url = args.base_url
        try:
            if base_url is None:
                from vlm_judge.serving.judge_server import JudgeServer

                log(f"starting python -m vlm_judge.serve {' '.join(extra_args)} ...")
                server = JudgeServer(
                    model_dir, served_model_name=args.served_model_name, extra_args=extra_args
                )
                base_url = server.start()
                log(f"server ready in {server.startup_s:.1f} s")
            token_ids = fetch_answer_token_ids(base_url, args.served_model_name)
            runs = {}
            offset = 0
            for concurrency, requests in zip(args.concurrency, args.requests, strict=True):
                log(f"vLLM: {requests} requests at concurrency {concurrency} ...")
                batch = images[offset : offset + requests]
                offset += requests
                result = bench_vllm(base_url, args.served_model_name, batch, warmup, concurrency, token_ids)
                runs[f"concurrency_{concurrency}"] = result
                log(
                    f"  {result['throughput_img_s']} img/s, latency {result['latency_ms']}, "
                    f"failures {result['failures']}, stages {result['stages']}"
                )
            return runs, (round(server.startup_s, 1) if server else None)
        finally:
            if server is not None:
                server.stop()  # give the cores and ~3 GB back before the next server / the HF loop

    report["vllm"], report["vllm_startup_s"] = run_vllm([])
    if args.sweep:
        report["sweep"] = {}
        for name, flags in SWEEP.items():
            runs, _ = run_vllm(flags)
            report["sweep"][name] = {"flags": flags, **runs}

    log(f"HF loop: {args.hf_images} images one at a time ...")
    report["hf_loop"], hf_scores = bench_hf(model_dir, images[: args.hf_images], warmup[0])
    log(f"  {report['hf_loop']['throughput_img_s']} img/s")

    # The same images through both paths give the same p_defect (the e2e test checks 1e-4 as well).
    first_run = report["vllm"][f"concurrency_{args.concurrency[0]}"]["p_defect"]
    diffs = [
        abs(first_run[Path(path).name] - p)
        for path, p in zip(images[: args.hf_images], hf_scores, strict=True)
        if first_run.get(Path(path).name) is not None
    ]
    runs_with_scores = list(report["vllm"].values())
    runs_with_scores += [
        r for entry in report.get("sweep", {}).values() for r in entry.values() if isinstance(r, dict)
    ]
    for run in runs_with_scores:
        run.pop("p_defect")
    report["max_abs_diff_vllm_vs_hf"] = float(f"{max(diffs):.2e}") if diffs else None

    best = max(run["throughput_img_s"] for run in report["vllm"].values())
    hf = report["hf_loop"]["throughput_img_s"]
    c1 = report["vllm"].get("concurrency_1", {})
    c16 = report["vllm"].get("concurrency_16", {})
    report["speedup_best_vllm_vs_hf"] = round(best / hf, 2)
    c4 = report["vllm"].get("concurrency_4", {})
    preprocess = c1.get("stages", {}).get("server_preprocess_ms")
    report["goals"] = {
        "vllm_c4_ge_1_5x_hf": bool(c4) and c4["throughput_img_s"] >= 1.5 * hf,
        "vllm_c1_mean_le_hf_mean": bool(c1)
        and c1["latency_ms"]["mean"] <= report["hf_loop"]["latency_ms"]["mean"],
        "server_preprocess_le_30ms": preprocess is not None and preprocess <= 30,
        "max_abs_diff_le_1e-4": report["max_abs_diff_vllm_vs_hf"] is not None
        and report["max_abs_diff_vllm_vs_hf"] <= 1e-4,
        "client_overhead_le_10pct": bool(c1) and (c1.get("client_overhead_frac") or 1.0) <= 0.10,
        "zero_failures_ge_200_at_16": bool(c16) and c16["requests"] >= 200 and c16["failures"] == 0,
    }
    shutil.rmtree(work, ignore_errors=True)
    print_report(report, args.output)
    return 0


def print_report(report: dict, output: str | None) -> None:
    """The benchmark's one JSON object on stdout, and in `output` when given."""
    text = json.dumps(report, indent=2)
    print(text)
    if output:
        Path(output).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
