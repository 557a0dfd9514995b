"""End to end through a real vLLM server on CPU (python -m vlm_judge.serve), plus the launcher's plan.

One server for the whole module (start-up ~40-110 s, ~3 GB): a merged-style tiny judge (model dir with
judge_metadata.json) with a LoRA adapter on top, so it serves both `defect-judge-base` (the merged model) and
`defect-judge` (merged + adapter). The last test stops it mid-batch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal

import httpx
import numpy as np
import pytest
from PIL import Image
from readme_blocks import readme_block, run_readme_block

from vlm_judge import serve
from vlm_judge.client import JudgeClient, fetch_answer_token_ids
from vlm_judge.images import to_data_url
from vlm_judge.modeling import NATIVE_1024_MAX_PIXELS, load_model, load_processor, pixel_bounds, score_images
from vlm_judge.protocol import image_only_messages, load_prompt, openai_messages, p_defect_from_top_logprobs
from vlm_judge.serving import vllm_command
from vlm_judge.serving.judge_server import JudgeServer

BASE, LORA = "defect-judge-base", "defect-judge"


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def judge_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model as scripts/merge_lora.py leaves a merged judge: the model dir + judge_metadata.json."""
    target = tmp_path_factory.mktemp("merged") / "judge"
    shutil.copytree(tiny_model_dir, target)
    min_pixels, max_pixels = pixel_bounds(load_processor(target))
    metadata = {
        "format": "vlm-judge-model/1",
        "pixel_bounds": {"min_pixels": min_pixels, "max_pixels": max_pixels},
        "prompt_version": load_prompt().version,
    }
    (target / "judge_metadata.json").write_text(json.dumps(metadata))
    return target


@pytest.fixture(scope="module")
def lora_dir(judge_dir, tmp_path_factory):
    """A PEFT LoRA adapter on the language model's q_proj/v_proj, rank 8, with random non-zero B."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = load_model(judge_dir, dtype="float32")
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    target = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three different 1024x1024 generations (PNG, PNG, JPEG): native resolution, 1369 visual tokens each."""
    folder = tmp_path_factory.mktemp("gens")
    paths = []
    for seed, suffix in ((0, "png"), (1, "png"), (2, "jpg")):
        rng = np.random.default_rng(seed)
        pixels = (rng.random((1024, 1024, 3)) * (60 + 90 * seed)).astype(np.uint8)
        path = folder / f"gen{seed}.{suffix}"
        Image.fromarray(pixels).save(path, **({"quality": 95} if suffix == "jpg" else {}))
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def hf_scores(judge_dir, lora_dir, images):
    """The HF reference p_defect of each image, for the merged model and for merged + adapter."""
    from peft import PeftModel

    processor = load_processor(judge_dir)
    base = score_images(load_model(judge_dir, dtype="float32"), processor, images)
    adapted = PeftModel.from_pretrained(load_model(judge_dir, dtype="float32"), str(lora_dir))
    return {BASE: base, LORA: score_images(adapted, processor, images)}


@pytest.fixture(scope="module")
def server(judge_dir, lora_dir):
    judge_server = JudgeServer(judge_dir, lora_adapter=lora_dir, served_model_name=LORA)
    judge_server.start()
    print(f"judge server ready in {judge_server.startup_s:.0f} s")
    yield judge_server
    judge_server.stop()


@pytest.fixture(scope="module")
def token_ids(server):
    return fetch_answer_token_ids(server.base_url, BASE)


def sdk_p_defect(server, messages, token_ids) -> float:
    """p_defect of one request through the official openai client, read from the answer tokens' exact logprobs."""
    from openai import OpenAI

    response = OpenAI(base_url=server.base_url, api_key="EMPTY").chat.completions.create(
        model=BASE,
        messages=messages,
        max_tokens=1,
        temperature=0,
        logprobs=True,
        extra_body={"logprob_token_ids": token_ids},
    )
    return p_defect_from_top_logprobs(response.choices[0].logprobs.content[0].top_logprobs, load_prompt())


# ---------------------------------------------------------------------------------------------- launcher plan (fast)


def test_launcher_flags_fit_a_native_1024_judge(judge_dir, lora_dir, capsys):
    assert serve.main(["--model", str(judge_dir), "--lora-adapter", str(lora_dir), "--print-command"]) == 0
    shown = json.loads(capsys.readouterr().out)
    command = shown["command"]

    def flag(name):
        return command[command.index(name) + 1]

    assert command[1:3] == ["-m", "vlm_judge.serving.vllm_entry"]  # vLLM's server with a bounded HTTP shutdown
    assert flag("--http-shutdown-timeout") == "2" and flag("--shutdown-timeout") == "10"  # the engine's teardown
    prompt = load_prompt()
    assert json.dumps(prompt.user) in flag("--chat-template")  # the judge prompt for image-only requests
    assert flag("--chat-template-content-format") == "openai"
    min_pixels, max_pixels = pixel_bounds(load_processor(judge_dir))
    assert max_pixels == NATIVE_1024_MAX_PIXELS
    assert json.loads(flag("--mm-processor-kwargs")) == {"min_pixels": min_pixels, "max_pixels": max_pixels}
    assert json.loads(flag("--limit-mm-per-prompt")) == {"image": 1, "video": 0}
    assert int(flag("--max-model-len")) >= 1369 + 60  # visual tokens of a 1024x1024 image + the prompt
    assert int(flag("--max-logprobs")) >= 20
    assert flag("--dtype") == "float32"  # as saved: vLLM's "auto" would serve it in bfloat16 on CPU
    assert "--enable-lora" in command and flag("--max-lora-rank") == "8"
    assert flag("--lora-modules") == f"{LORA}={lora_dir.resolve()}" and flag("--served-model-name") == BASE
    assert shown["model"] == LORA and shown["url"].endswith("/v1")


def test_launcher_gives_the_engine_every_core_of_a_small_cpu_machine(judge_dir, monkeypatch, capsys):
    def shown_env(*flags):
        assert serve.main(["--model", str(judge_dir), "--print-command", *flags]) == 0
        return json.loads(capsys.readouterr().out)["env"]

    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    monkeypatch.setattr(vllm_command, "_has_cuda", lambda: False)
    monkeypatch.setattr(vllm_command.os, "sched_getaffinity", lambda pid: {0, 1})
    assert shown_env()["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"  # vLLM alone would keep 1 of the 2 cores idle
    assert shown_env("--cpu-reserved-cores", "1")["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "1"
    monkeypatch.setattr(vllm_command.os, "sched_getaffinity", lambda pid: set(range(32)))
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in shown_env()  # a big machine keeps vLLM's own binding
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "2")
    monkeypatch.setattr(vllm_command.os, "sched_getaffinity", lambda pid: {0, 1})
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in shown_env()  # the user's own setting is inherited unchanged
    assert serve.main(["--model", str(judge_dir), "--print-command", "--cpu-reserved-cores", "-1"]) == 2
    assert "--cpu-reserved-cores must be >= 0" in capsys.readouterr().err


def test_launcher_reads_metadata_and_names_bad_input(judge_dir, tmp_path, capsys):
    other = tmp_path / "judge"
    shutil.copytree(judge_dir, other)
    metadata = json.loads((other / "judge_metadata.json").read_text())
    metadata["pixel_bounds"]["max_pixels"] = 448 * 448  # the training run used smaller images
    (other / "judge_metadata.json").write_text(json.dumps(metadata))
    assert serve.main(["--model", str(other), "--print-command"]) == 0
    captured = capsys.readouterr()
    command = json.loads(captured.out)["command"]
    assert json.loads(command[command.index("--mm-processor-kwargs") + 1])["max_pixels"] == 448 * 448
    assert "differ from the processor config" in captured.err

    assert serve.main(["--model", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "not-adapter").mkdir()
    assert serve.main(["--model", str(judge_dir), "--lora-adapter", str(tmp_path / "not-adapter")]) == 2
    err = capsys.readouterr().err
    assert "adapter_config.json" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- real server (slow)


@pytest.mark.slow
def test_models_endpoint_lists_the_judge_and_its_base(server):
    from openai import OpenAI

    root = server.base_url.removesuffix("/v1")
    assert httpx.get(f"{root}/health", timeout=10).status_code == 200
    raw = httpx.get(f"{server.base_url}/models", timeout=10).json()
    assert {m["id"] for m in raw["data"]} == {BASE, LORA}
    listed = {m.id for m in OpenAI(base_url=server.base_url, api_key="EMPTY").models.list()}
    assert listed == {BASE, LORA}


@pytest.mark.slow
def test_official_openai_client_and_raw_http_match_hf(server, images, hf_scores, token_ids):

    prompt = load_prompt()
    messages = openai_messages(prompt, to_data_url(images[0]))
    assert sdk_p_defect(server, messages, token_ids) == pytest.approx(hf_scores[BASE][0], abs=1e-4)

    body = {
        "model": BASE,
        "messages": messages,
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "logprob_token_ids": token_ids,
    }
    raw = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=120).json()
    p_raw = p_defect_from_top_logprobs(raw["choices"][0]["logprobs"]["content"][0]["top_logprobs"], prompt)
    assert p_raw == pytest.approx(hf_scores[BASE][0], abs=1e-4)

    # Bytes that are no image, sent past the client's own check: the server refuses with 400 and stays up.
    body["messages"] = openai_messages(prompt, "data:image/png;base64,bm90IGFuIGltYWdl")
    refused = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=60)
    assert refused.status_code == 400 and "image" in refused.text.lower()


@pytest.mark.slow
def test_image_only_request_gets_the_judge_prompt_server_side(
    server, judge_dir, images, hf_scores, token_ids
):
    """A request that carries only the image (what curl or any language sends) is tokenized exactly as the
    client-built request, and scores the same p_defect through the official openai client."""

    prompt = load_prompt()
    url = to_data_url(images[1])
    root = server.base_url.removesuffix("/v1")

    def tokens(messages, **options):
        body = {"model": BASE, "messages": messages, **options}
        response = httpx.post(f"{root}/tokenize", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()["tokens"]

    client_built = tokens(openai_messages(prompt, url))
    image_only = tokens(image_only_messages(url))
    assert image_only == client_built
    # Also when the caller forgets the generation prompt (pooling and /tokenize default it to false).
    assert tokens(image_only_messages(url), add_generation_prompt=False) == client_built
    tokenizer = load_processor(judge_dir).tokenizer
    user_ids = tokenizer.encode(prompt.user, add_special_tokens=False)
    text = tokenizer.decode(image_only)
    assert prompt.system in text and prompt.user in text and text.endswith("<|im_start|>assistant\n")
    assert any(image_only[i : i + len(user_ids)] == user_ids for i in range(len(image_only)))

    assert sdk_p_defect(server, image_only_messages(url), token_ids) == pytest.approx(hf_scores[BASE][1], abs=1e-4)


@pytest.mark.slow
def test_judge_client_batch_matches_hf_and_a_garbage_image_is_named(
    server, images, hf_scores, token_ids, tmp_path
):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    batch = [images[0], str(garbage), images[1], images[2]]
    with JudgeClient(
        server.base_url, BASE, answer_token_ids=token_ids, max_concurrency=2, timeout=120
    ) as judge:
        results = judge.score_batch(batch)
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].error.startswith(f"ImageError: image '{garbage}'") and results[1].attempts == 0
    scored = [results[0].p_defect, results[2].p_defect, results[3].p_defect]
    assert scored == pytest.approx(hf_scores[BASE], abs=1e-4)
    assert max(hf_scores[BASE]) - min(hf_scores[BASE]) > 1e-4  # the images really score differently


@pytest.mark.slow
def test_readme_curl_runs_as_written_on_a_1024_png(server, images, hf_scores, tmp_path):
    """The README's curl block, literally: the request body from a file (a 1024x1024 PNG is megabytes, too long
    for a command line), the image only, and the server's own p_defect, which is the exact distribution's."""
    Image.open(images[0]).save(tmp_path / "gen.png")
    assert (tmp_path / "gen.png").stat().st_size > 1_000_000
    block = readme_block("python3 -c 'import base64")
    p_defect = float(run_readme_block(block, server.base_url.removesuffix("/v1"), tmp_path))
    assert p_defect == pytest.approx(hf_scores[LORA][0], abs=1e-4)  # "defect-judge" is the adapter here
    with JudgeClient(server.base_url, LORA, timeout=120) as judge:
        result = judge.score(images[0])
    assert result.method == "exact" and abs(result.p_defect - p_defect) < 1e-6


@pytest.mark.slow
def test_bad_images_and_links_are_client_errors_not_retried(server, tmp_path):
    """Safe by default: only inline images; a link, a file URL, bytes that are no image and a decompression bomb
    are 4xx with a message (never a 500), which the client does not retry; the server stays up."""
    import base64
    import struct
    import zlib

    from openai import BadRequestError, OpenAI

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
        + chunk(b"IEND", b"")
    )
    cases = {
        "http://127.0.0.1:1/x.png": (400, "accepts images only inline"),
        "file:///etc/passwd": (400, "URL scheme file: is not accepted"),
        "data:image/png;base64,bm90IGFuIGltYWdl": (400, "not an image PIL can read"),
        "data:image/png;base64," + base64.b64encode(bomb).decode(): (400, "decompression bomb"),
    }
    requests = []

    def count(request):
        requests.append(request)

    openai_client = OpenAI(
        base_url=server.base_url,
        api_key="EMPTY",
        max_retries=3,
        http_client=httpx.Client(event_hooks={"request": [count]}),
    )
    for url, (status, message) in cases.items():
        requests.clear()
        with pytest.raises(BadRequestError) as raised:
            openai_client.chat.completions.create(
                model=LORA, messages=image_only_messages(url), max_tokens=1, logprobs=True
            )
        assert raised.value.status_code == status and message in str(raised.value), (url, raised.value)
        assert len(requests) == 1  # a client error: not retried
    assert httpx.get(server.base_url.removesuffix("/v1") + "/health", timeout=10).status_code == 200
    log = server.log_text()
    assert "Traceback" not in log


@pytest.mark.slow
def test_lora_adapter_variant_matches_hf_peft(server, images, hf_scores, token_ids):
    with JudgeClient(
        server.base_url, LORA, answer_token_ids=token_ids, max_concurrency=3, timeout=120
    ) as judge:
        results = judge.score_batch(images)
    assert [r.p_defect for r in results] == pytest.approx(hf_scores[LORA], abs=1e-4)
    differences = [abs(a - b) for a, b in zip(hf_scores[LORA], hf_scores[BASE], strict=True)]
    assert max(differences) > 1e-3  # the adapter is applied, not silently ignored


@pytest.mark.slow
def test_server_stopped_mid_batch_answers_what_it_accepted(server, images, token_ids, monkeypatch):
    """Last test of the module: it stops the server. SIGTERM to the launcher mid-batch (as `kill PID` does): the
    server drains (the requests inside are answered, new ones get 503), then vLLM shuts down; the rest of the batch
    fails after its retries with named errors, and the launcher exits 0 (drained, nothing forced) with no vLLM
    process left behind and no traceback in the log."""
    import openai._base_client

    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.05)
    batch = [images[i % 3] for i in range(8)]
    names = [f"item{i}" for i in range(8)]

    stopped = []

    def stop_after_first(index, result):
        if not stopped:  # one `kill PID`, as an orchestrator sends
            stopped.append(index)
            server.process.send_signal(signal.SIGTERM)

    with JudgeClient(
        server.base_url, LORA, answer_token_ids=token_ids, max_concurrency=2, timeout=30, max_retries=3
    ) as judge:
        results = judge.score_batch(batch, names, on_result=stop_after_first)
    assert [r.image for r in results] == names
    failed = [r for r in results if not r.ok]
    assert results and len(failed) >= 4, [r.error for r in results]
    for result in failed:
        assert result.error.split(":")[0] in {"ConnectionError", "ServerError", "TimeoutError"}, result.error
        assert result.attempts == 4 and "after 4 attempts" in result.error

    assert server.process.wait(timeout=90) == 0
    log = server.log_text()
    assert "vlm_judge.serve: stopping vLLM" in log
    assert "vlm_judge.serve: vLLM stopped (code 0)" in log and "exit 0" in log, log[-3000:]
    drained = next(line for line in log.splitlines() if "drained in" in line)
    answered, in_flight = re.search(r"(\d+) of (\d+) in-flight request\(s\) answered", drained).groups()
    assert answered == in_flight and "still open" not in drained, drained
    # The first answer, and every request the server had accepted when the signal came, reached the client.
    assert sum(r.ok for r in results) >= 1 + int(answered), (drained, [r.error for r in results])
    assert "Traceback" not in log and "cannot schedule new futures" not in log
    # Exit 0 (not 4) already says vLLM was not SIGKILLed after the grace. vLLM's own "[shutdown] EngineCore: start
    # mode=drain" line is not asserted: the engine core prints it only when its busy loop sees the request, and
    # when the API server goes first the core is stopped by its parent's death without that line (seen in CI).
    with pytest.raises(ProcessLookupError):  # the launcher reaped vLLM's whole process group before exiting
        os.killpg(server.vllm_pid, 0)
