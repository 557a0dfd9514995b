"""Shared fixtures: fast client backoff, the fake chat server, the tiny Qwen2-VL (built once per test session,
seconds, no downloads), side-by-side renders."""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may reach the hub from tests
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Client retries (the openai SDK's) back off from 10 ms instead of 0.5 s, so retry tests take no real waiting."""
    import openai._base_client

    monkeypatch.setattr(openai._base_client, "INITIAL_RETRY_DELAY", 0.01)


@pytest.fixture
def server():
    """A fake OpenAI-compatible server (tests/fake_openai_server.py) answering like the judge, for client, score,
    reward and judge-spec tests.

    The end-to-end modules (test_serving_e2e, test_classify_e2e) override ``server`` with a real vLLM one."""
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (modules opt in with usefixtures): the machine is shared, and tiny
    matrices gain nothing from more threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from vlm_judge.embedded.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-qwen2-vl"))


@pytest.fixture(scope="session")
def make_renders():
    """Factory for side-by-side test data: make(root, {system: {prompt_id: seed}}) writes the folder layout
    root/<system>/<prompt_id>.png of random-noise pictures (same seed = same pixels; ``compress`` gives a
    system's PNGs another compress level, i.e. the same pixels in different bytes) and returns root."""
    import numpy as np
    from PIL import Image

    def make(root, layout, *, size: int = 96, compress: dict[str, int] | None = None):
        for system, prompts in layout.items():
            (root / system).mkdir(parents=True, exist_ok=True)
            level = (compress or {}).get(system, 6)
            for prompt_id, seed in prompts.items():
                pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / system / f"{prompt_id}.png", compress_level=level)
        return root

    return make
