"""JudgeSpec: the judge config schema (validation from its fields) and the client's settings; from_spec builds the
same client as the keyword form; probe() tells a dead endpoint, a rejected key and an unserved model apart."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from PIL import Image

from eval.scoring import _error_kind
from vlm_judge.client import JudgeClient
from vlm_judge.judges import (
    EndpointError,
    JudgeSpec,
    JudgeSpecError,
    JudgeUnavailable,
    ModelNotServedError,
    probe,
)
from vlm_judge.protocol import DEFAULT_PROMPT_FILE
from vlm_judge.reward import DefectReward
from vlm_judge.serving.judge_server import free_port

ROOT = Path(__file__).resolve().parent.parent
VERBALIZED = DEFAULT_PROMPT_FILE.with_name("defect_judge_verbalized.yaml")


def test_yaml_keys_are_the_fields_and_every_shipped_key_is_one():
    keys = JudgeSpec.yaml_keys()
    assert keys == {f.name for f in fields(JudgeSpec)} - {"api_key", "source"}
    for path in sorted((ROOT / "baselines").glob("*.yaml")):
        assert set(yaml.safe_load(path.read_text())) <= keys, path


def test_unknown_keys_are_named_and_a_key_may_not_sit_in_a_file(tmp_path):
    base = {"name": "x", "model": "m", "base_url": "http://x/v1"}
    with pytest.raises(JudgeSpecError, match=r"unknown field\(s\) colour, size \(known: .*top_logprobs"):
        JudgeSpec.from_mapping({**base, "colour": "red", "size": 3})
    with pytest.raises(JudgeSpecError, match="unknown field.*api_key"):
        JudgeSpec.from_mapping({**base, "api_key": "sk-secret"})  # keys belong in api_key_env
    path = tmp_path / "j.yaml"
    path.write_text("name: x\nmodel: m\nbase_url: http://x/v1\ncolour: red\n")
    with pytest.raises(JudgeSpecError, match=f"^{path}: unknown field"):
        JudgeSpec.from_yaml(path)
    with pytest.raises(TypeError, match="colour"):
        JudgeClient("http://127.0.0.1:9/v1", "m", colour="red")


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("top_logprobs", "many", "'top_logprobs' must be int, not 'many'"),
        ("top_logprobs", True, "'top_logprobs' must be int"),  # a bool is not a count
        ("timeout", "fast", "'timeout' must be float"),
        ("exact_answer_logprobs", "yes", "'exact_answer_logprobs' must be bool"),
        ("extra_body", ["a"], "'extra_body' must be dict"),
        ("name", 3, "'name' must be str or None"),
        ("max_concurrency", 0, "'max_concurrency' must be >= 1"),
        ("max_retries", -1, "'max_retries' must be >= 0"),
        ("timeout", 0, "'timeout' > 0"),
        ("endpoint", "completions", "'endpoint' must be one of chat, classify"),
    ],
)
def test_bad_values_are_named(key, value, needle):
    with pytest.raises(JudgeSpecError, match=needle.replace("(", r"\(")):
        JudgeSpec.from_mapping({"name": "x", "model": "m", "base_url": "http://x/v1", key: value})


def test_types_mode_rules_and_required_keys():
    spec = JudgeSpec.from_mapping(
        {"name": "x", "model": "m", "base_url": "http://x/v1", "timeout": 30, "extra_body": None}
    )
    assert spec.timeout == 30.0 and isinstance(spec.timeout, float) and spec.extra_body == {}
    assert spec.mode == "logprobs" and spec.prompt_path == DEFAULT_PROMPT_FILE
    with pytest.raises(JudgeSpecError, match="'exact_answer_logprobs' needs a logprobs-mode prompt"):
        JudgeSpec(base_url="http://x/v1", model="m", prompt=str(VERBALIZED), exact_answer_logprobs=True)
    with pytest.raises(JudgeSpecError, match="classify.*logprobs-mode"):
        JudgeSpec(base_url="http://x/v1", model="m", prompt=VERBALIZED, endpoint="classify")
    for raw, needle in [
        ({"model": "m", "base_url": "u"}, "'name' is required"),
        ({"name": "x", "base_url": "u"}, "'model'"),
        ({"name": "x", "model": "m"}, "'base_url' or 'base_url_env'"),
        ({"name": "x", "model": "m", "base_url": "u", "prompt": "prompts/missing.yaml"}, "missing.yaml"),
    ]:
        with pytest.raises(JudgeSpecError, match=needle):
            JudgeSpec.from_mapping(raw)


def test_resolve_fills_from_the_environment_or_says_what_is_missing():
    spec = JudgeSpec.from_yaml(ROOT / "baselines/finetuned.yaml")
    resolved = spec.resolve({"JUDGE_BASE_URL": "http://h:1/v1/", "JUDGE_MODEL": "j2", "JUDGE_REVISION": "r"})
    assert (resolved.base_url, resolved.model, resolved.revision) == ("http://h:1/v1", "j2", "r")
    assert (
        spec.resolve({}).base_url == "http://127.0.0.1:8000/v1" and spec.resolve({}).model == "defect-judge"
    )
    gpt = JudgeSpec.from_yaml(ROOT / "baselines/gpt-5.1.yaml")
    with pytest.raises(JudgeUnavailable, match="OPENAI_API_KEY not set"):
        gpt.resolve({})
    keyed = gpt.resolve({"OPENAI_API_KEY": "sk-1"})
    assert keyed.api_key == "sk-1" and "sk-1" not in repr(keyed) and "sk-1" not in str(keyed.describe())


def _grey(tmp_path, level: int) -> str:
    path = tmp_path / f"g{level}.png"
    Image.new("RGB", (64, 64), (level, level, level)).save(path)
    return str(path)


def test_from_spec_sends_what_the_keyword_client_sends(server, tmp_path):
    image = _grey(tmp_path, 102)
    settings = {"top_logprobs": 5, "max_retries": 1, "timeout": 5.0, "extra_body": {"seed": 7}}
    with JudgeClient(server.base_url, "defect-judge", **settings) as judge:
        by_keywords = judge.score(image)
    with JudgeClient.from_spec(
        JudgeSpec(base_url=server.base_url, model="defect-judge", **settings)
    ) as judge:
        by_spec = judge.score(image)
    assert by_keywords.p_defect == by_spec.p_defect == pytest.approx(0.4, abs=1e-6)
    assert server.bodies[0] == server.bodies[1] and server.bodies[0]["top_logprobs"] == 5
    assert server.bodies[0]["seed"] == 7

    # exact_answer_logprobs: the client asks the server's tokenizer once and sends the ids, not top_logprobs
    server.tokens = {"Yes": [11], " Yes": [12], "No": [21], " No": [22]}
    spec = JudgeSpec(base_url=server.base_url, model="defect-judge", exact_answer_logprobs=True, timeout=5.0)
    with JudgeClient.from_spec(spec) as judge:
        assert judge.score(image).ok
    assert (
        server.bodies[-1]["logprob_token_ids"] == [11, 12, 21, 22] and "top_logprobs" not in server.bodies[-1]
    )

    with DefectReward(spec=JudgeSpec(base_url=server.base_url, model="defect-judge", timeout=5.0)) as reward:
        assert reward([image]) == pytest.approx([0.6], abs=1e-6)
        assert reward.client.spec.max_concurrency == 8  # a spec is taken as it is
    with DefectReward(server.base_url, timeout=5.0) as reward:
        assert reward.client.spec.max_concurrency == 16  # the reward's own default


def test_failures_carry_their_kind(server, tmp_path):
    from fake_openai_server import Reply

    server.queue = [Reply.error(500, "down")] * 2
    with JudgeClient(server.base_url, "defect-judge", max_retries=1, timeout=5.0) as judge:
        result = judge.score(_grey(tmp_path, 51))
        bad = judge.score(str(tmp_path / "missing.png"))
    assert result.error_kind == "ServerError" and result.error.startswith("ServerError: HTTP 500")
    assert result.attempts == 2 and "after 2 attempts" in result.error
    assert bad.error_kind == "ImageError" and bad.attempts == 0
    # A cache line written before results carried error_kind still yields its kind.
    assert _error_kind({"p_defect": None, "error": "ServerError: HTTP 500: down"}) == "ServerError"
    assert (
        _error_kind({"p_defect": None, "error": "x: y", "error_kind": "RateLimitError"}) == "RateLimitError"
    )
    assert _error_kind({"p_defect": 0.3, "error": None}) is None


def test_probe(server):
    spec = JudgeSpec(base_url=server.base_url, model="defect-judge")
    assert "defect-judge" in [m["id"] for m in probe(spec)]
    with pytest.raises(ModelNotServedError, match="model 'nope' is not served at"):
        probe(JudgeSpec(base_url=server.base_url, model="nope"))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(EndpointError, match=f"endpoint {dead} unreachable: cannot reach it"):
        probe(JudgeSpec(base_url=dead, model="m"), timeout=2.0)


def test_probe_names_a_rejected_key():
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(models=["m"], api_key="sk-right") as fake:
        with pytest.raises(EndpointError, match="rejected the API key \\(HTTP 401\\)"):
            probe(JudgeSpec(base_url=fake.base_url, model="m", api_key="sk-wrong"))
        assert [m["id"] for m in probe(JudgeSpec(base_url=fake.base_url, model="m", api_key="sk-right"))] == [
            "m"
        ]
