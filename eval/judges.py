"""Judge configs (``baselines/*.yaml``) -> a ready JudgeClient, or a skip with the reason.

A config names an OpenAI-compatible endpoint and how to ask it; every judge is then run by the same harness
(eval.compare) through the same vlm_judge.client.JudgeClient. Fields::

    name            short id used in the report and cache file names         (required)
    model           served model name                                        (required unless model_env is set)
    model_env       env var that overrides ``model``                          (optional)
    base_url        endpoint, e.g. http://127.0.0.1:8000/v1                   (one of base_url / base_url_env)
    base_url_env    env var holding the endpoint; ``base_url`` is then its default (no default -> skipped)
    api_key_env     env var holding the API key                               (optional)
    api_key_required  skip when the key env var is unset (default: true when api_key_env is given)
    prompt          prompt file (prompts/...); its ``mode`` picks logprobs or verbalized   (default: the judge prompt)
    top_logprobs    first-token candidates to request (logprobs mode)         (default 20)
    exact_answer_logprobs  vLLM only: ask for the log-probabilities of every Yes/No token variant instead of
                    the top k (vlm_judge.client.fetch_answer_token_ids); an untrained or weak model whose
                    answer words fall outside the top k still gets a p_defect      (default false)
    max_concurrency, timeout, max_retries     passed to the client           (defaults 8, 30.0, 3)
    extra_body      dict merged into every request body                       (optional)
    revision        free text that goes into the cache key, e.g. a checkpoint hash  (optional)
    revision_env    env var that overrides ``revision``                        (optional)
    description     free text for the report                                  (optional)

Relative ``prompt`` paths are looked up from the current directory, then from the project root.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vlm_judge.protocol import JudgePrompt, ProtocolError, load_prompt

PROJECT_ROOT = Path(__file__).resolve().parent.parent
KNOWN_FIELDS = {
    "name",
    "description",
    "model",
    "model_env",
    "base_url",
    "base_url_env",
    "api_key_env",
    "api_key_required",
    "prompt",
    "top_logprobs",
    "exact_answer_logprobs",
    "max_concurrency",
    "timeout",
    "max_retries",
    "extra_body",
    "revision",
    "revision_env",
}


class JudgeConfigError(ValueError):
    """A judge config file that cannot be used as written (the message names the file and the field)."""


@dataclass(frozen=True)
class JudgeConfig:
    name: str
    model: str | None
    source: str
    prompt_path: Path
    prompt: JudgePrompt
    base_url: str | None = None
    base_url_env: str | None = None
    model_env: str | None = None
    api_key_env: str | None = None
    api_key_required: bool = False
    top_logprobs: int = 20
    exact_answer_logprobs: bool = False
    max_concurrency: int = 8
    timeout: float = 30.0
    max_retries: int = 3
    extra_body: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None
    revision_env: str | None = None
    description: str = ""

    @property
    def mode(self) -> str:
        return self.prompt.mode


@dataclass(frozen=True)
class ResolvedJudge:
    """A judge whose endpoint, model and key are known (and, after check_endpoint, reachable)."""

    config: JudgeConfig
    base_url: str
    model: str
    api_key: str | None
    revision: str | None

    @property
    def name(self) -> str:
        return self.config.name

    def config_hash(self) -> str:
        """Hash of everything that changes a judge's answers (not endpoint URL, concurrency or timeouts:
        moving a server or retuning the client must not throw the cache away)."""
        prompt_file = self.config.prompt_path.read_bytes()
        payload = {
            "model": self.model,
            "mode": self.config.mode,
            "prompt_version": self.config.prompt.version,
            "prompt_sha256": hashlib.sha256(prompt_file).hexdigest(),
            "top_logprobs": self.config.top_logprobs,
            "exact_answer_logprobs": self.config.exact_answer_logprobs,
            "extra_body": self.config.extra_body,
            "revision": self.revision,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """What the report shows about this judge (no key)."""
        return {
            "name": self.name,
            "config": self.config.source,
            "base_url": self.base_url,
            "model": self.model,
            "mode": self.config.mode,
            "prompt": str(self.config.prompt_path),
            "prompt_version": self.config.prompt.version,
            "top_logprobs": self.config.top_logprobs,
            "exact_answer_logprobs": self.config.exact_answer_logprobs,
            "max_concurrency": self.config.max_concurrency,
            "timeout": self.config.timeout,
            "max_retries": self.config.max_retries,
            "extra_body": self.config.extra_body,
            "revision": self.revision,
            "config_hash": self.config_hash(),
            "description": self.config.description,
        }


@dataclass(frozen=True)
class SkippedJudge:
    name: str
    source: str
    reason: str  # starts with "skipped: "


def _resolve_prompt_path(value: str | None, source: Path) -> Path:
    if not value:
        return PROJECT_ROOT / "prompts" / "defect_judge.yaml"
    path = Path(value)
    if path.is_absolute():
        return path
    for base in (Path.cwd(), PROJECT_ROOT, source.parent):
        if (base / path).is_file():
            return (base / path).resolve()
    return (PROJECT_ROOT / path).resolve()  # load_prompt then names the missing file


def _typed(raw: Mapping[str, Any], key: str, kind: type, default: Any, source: Path) -> Any:
    value = raw.get(key, default)
    if value is None:
        return default
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise JudgeConfigError(f"{source}: field {key!r} must be {kind.__name__}, not {value!r}")
    return value


def load_judge_config(path: str | Path) -> JudgeConfig:
    """Read and validate one judge config file; JudgeConfigError names the file and the field at fault."""
    source = Path(path)
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JudgeConfigError(f"{source}: judge config does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JudgeConfigError(f"{source}: cannot be read ({exc})") from None
    except yaml.YAMLError as exc:
        raise JudgeConfigError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise JudgeConfigError(f"{source}: a judge config must be a mapping of fields")
    unknown = sorted(set(raw) - KNOWN_FIELDS)
    if unknown:
        raise JudgeConfigError(
            f"{source}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(KNOWN_FIELDS))})"
        )
    name = _typed(raw, "name", str, None, source)
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise JudgeConfigError(f"{source}: 'name' is required: letters, digits, '-', '_', '.' (got {name!r})")
    model = _typed(raw, "model", str, None, source)
    model_env = _typed(raw, "model_env", str, None, source)
    if not model and not model_env:
        raise JudgeConfigError(f"{source}: 'model' (or 'model_env') is required")
    base_url = _typed(raw, "base_url", str, None, source)
    base_url_env = _typed(raw, "base_url_env", str, None, source)
    if not base_url and not base_url_env:
        raise JudgeConfigError(f"{source}: 'base_url' or 'base_url_env' is required")
    extra_body = raw.get("extra_body") or {}
    if not isinstance(extra_body, dict):
        raise JudgeConfigError(f"{source}: 'extra_body' must be a mapping")
    api_key_env = _typed(raw, "api_key_env", str, None, source)
    prompt_path = _resolve_prompt_path(_typed(raw, "prompt", str, None, source), source)
    try:
        prompt = load_prompt(prompt_path)
    except ProtocolError as exc:
        raise JudgeConfigError(f"{source}: {exc}") from None
    config = JudgeConfig(
        name=name,
        model=model,
        source=str(source),
        prompt_path=prompt_path,
        prompt=prompt,
        base_url=base_url,
        base_url_env=base_url_env,
        model_env=model_env,
        api_key_env=api_key_env,
        api_key_required=_typed(raw, "api_key_required", bool, api_key_env is not None, source),
        top_logprobs=_typed(raw, "top_logprobs", int, 20, source),
        exact_answer_logprobs=_typed(raw, "exact_answer_logprobs", bool, False, source),
        max_concurrency=_typed(raw, "max_concurrency", int, 8, source),
        timeout=_typed(raw, "timeout", float, 30.0, source),
        max_retries=_typed(raw, "max_retries", int, 3, source),
        extra_body=extra_body,
        revision=_typed(raw, "revision", str, None, source),
        revision_env=_typed(raw, "revision_env", str, None, source),
        description=_typed(raw, "description", str, "", source),
    )
    for key in ("top_logprobs", "max_concurrency"):
        if getattr(config, key) < 1:
            raise JudgeConfigError(f"{source}: {key!r} must be >= 1")
    if config.exact_answer_logprobs and config.mode != "logprobs":
        raise JudgeConfigError(f"{source}: 'exact_answer_logprobs' needs a logprobs-mode prompt")
    if config.max_retries < 0 or config.timeout <= 0:
        raise JudgeConfigError(f"{source}: 'max_retries' must be >= 0 and 'timeout' > 0")
    return config


def resolve_judge(config: JudgeConfig, env: Mapping[str, str] | None = None) -> ResolvedJudge | SkippedJudge:
    """Fill endpoint, model and key from the environment; a missing one makes a SkippedJudge with the reason."""
    env = os.environ if env is None else env

    def from_env(var: str | None) -> str | None:
        value = env.get(var, "").strip() if var else ""
        return value or None

    base_url = from_env(config.base_url_env) or config.base_url
    if not base_url:
        return SkippedJudge(config.name, config.source, f"skipped: {config.base_url_env} not set")
    api_key = from_env(config.api_key_env)
    if config.api_key_required and not api_key:
        return SkippedJudge(config.name, config.source, f"skipped: {config.api_key_env} not set")
    model = from_env(config.model_env) or config.model
    if not model:
        return SkippedJudge(config.name, config.source, f"skipped: {config.model_env} not set")
    revision = from_env(config.revision_env) or config.revision
    return ResolvedJudge(config, base_url.rstrip("/"), model, api_key, revision)


def check_endpoint(judge: ResolvedJudge, timeout: float = 10.0) -> str | None:
    """None when the endpoint answers; else the skip reason. Asks GET {base_url}/models once (no retries:
    the client's retries are for items, this only tells a dead or wrong endpoint from a live one)."""
    import httpx

    headers = {"Authorization": f"Bearer {judge.api_key}"} if judge.api_key else {}
    url = f"{judge.base_url}/models"
    try:
        response = httpx.get(url, headers=headers, timeout=min(timeout, judge.config.timeout))
    except httpx.HTTPError as exc:
        return f"skipped: endpoint {judge.base_url} unreachable ({type(exc).__name__}: {exc or 'no answer'})"
    if response.status_code in (401, 403):
        return f"skipped: endpoint {judge.base_url} rejected the API key (HTTP {response.status_code})"
    if response.status_code != 200:
        return None  # some gateways have no /models; the requests themselves will tell
    try:
        served = [m.get("id") for m in response.json().get("data", []) if isinstance(m, dict)]
    except (ValueError, AttributeError):
        return None
    if served and judge.model not in served:
        return f"skipped: model {judge.model!r} is not served at {judge.base_url} (served: {', '.join(map(str, served[:5]))})"
    return None


def make_client(judge: ResolvedJudge) -> Any:
    """The JudgeClient for a resolved judge: the one client every judge goes through."""
    from vlm_judge.client import JudgeClient, fetch_answer_token_ids

    config = judge.config
    token_ids = None
    if config.exact_answer_logprobs:
        # Asked once per run from the server's own tokenizer; a non-vLLM endpoint fails here, with the reason.
        token_ids = fetch_answer_token_ids(
            judge.base_url, judge.model, prompt=config.prompt, api_key=judge.api_key, timeout=config.timeout
        )
    return JudgeClient(
        base_url=judge.base_url,
        model=judge.model,
        api_key=judge.api_key,
        prompt=config.prompt_path,
        top_logprobs=config.top_logprobs,
        max_concurrency=config.max_concurrency,
        timeout=config.timeout,
        max_retries=config.max_retries,
        extra_body=config.extra_body or None,
        answer_token_ids=token_ids,
    )
