"""JudgeSpec: how to ask one judge, declared once. It is both the schema of a judge config file
(baselines/*.yaml, read by `JudgeSpec.from_yaml`) and the settings of the judge client
(`JudgeClient.from_spec(spec)`, `JudgeClient(base_url, model, **fields)`).

Every field below is a YAML key, except `api_key` and `source` (a key belongs in the environment, named by
`api_key_env`; `source` is the file a spec was read from). The YAML keys, their types and the "unknown field"
error all come from `dataclasses.fields(JudgeSpec)`: a new setting is one new field.

`base_url: local` makes an in-process judge instead (vlm_judge.judges.backends.LocalJudge): `model` is then a
checkpoint folder, scored with HF transformers `max_concurrency` images per forward pass, no server needed.

The `*_env` fields name environment variables that override their field when set (`resolve()`): a config can
carry a default endpoint and still be pointed elsewhere, and a judge whose endpoint or key is unset is skipped
with the reason (`JudgeUnavailable`), not failed.
"""

from __future__ import annotations

import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from vlm_judge.protocol import DEFAULT_PROMPT_FILE, JudgePrompt, ProtocolError, load_prompt

PROJECT_ROOT = DEFAULT_PROMPT_FILE.parent.parent  # a checkout's root, or the installed package (both hold prompts/)
ENDPOINTS = ("chat", "classify")
LOCAL = "local"  # the base_url of an in-process judge (model = a checkpoint folder)
NOT_IN_YAML = {"yaml": False}  # field metadata: a setting a config file may not carry


class JudgeSpecError(ValueError):
    """A judge spec that cannot be used as written; the message names the field (and the file, if any)."""


class JudgeUnavailable(Exception):
    """`resolve()`: an environment variable the judge needs (endpoint, key, model) is not set."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class JudgeSpec:
    # -- where the judge is
    base_url: str | None = None  # OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1, or "local"
    model: str | None = None  # served model name; with base_url "local", a checkpoint folder
    api_key: str | None = field(default=None, repr=False, metadata=NOT_IN_YAML)
    # -- how it is asked
    prompt: str | Path | JudgePrompt | None = None  # prompt file; its `mode` picks logprobs or verbalized
    endpoint: str = "chat"  # "chat" (chat completions) or "classify" (vlm_judge.serve --mode classify)
    top_logprobs: int = 20  # first-token candidates (logprobs mode)
    # The logprob of every Yes/No token variant instead of the top k: None (default) = wherever the endpoint can
    # (vLLM: its /tokenize gives the ids; elsewhere the top k), True = require it, False = always the top k.
    exact_answer_logprobs: bool | None = None
    extra_body: dict = field(default_factory=dict)  # merged into every request body
    # -- how the client sends
    max_concurrency: int = 8  # requests in flight; a local judge's images per forward pass
    timeout: float = 30.0  # seconds per HTTP request
    max_retries: int = 3  # the openai SDK's retries: connection errors, timeouts, 408/409/429, 5xx
    # -- the harness: identity, cache key, environment indirection
    name: str | None = None  # short id in reports and cache file names (required in a config file)
    description: str = ""
    revision: str | None = None  # free text in the cache key, e.g. a checkpoint hash
    base_url_env: str | None = None  # env var holding the endpoint; `base_url` is then its default
    model_env: str | None = None
    api_key_env: str | None = None
    api_key_required: bool | None = None  # skip when the key is unset (default: true when api_key_env is set)
    revision_env: str | None = None
    source: str | None = field(default=None, compare=False, metadata=NOT_IN_YAML)

    def __post_init__(self) -> None:
        for spec_field in fields(self):
            value = getattr(self, spec_field.name)
            allowed = _FIELD_TYPES[spec_field.name]
            if float in allowed and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, spec_field.name, float(value))
            elif not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise JudgeSpecError(f"field {spec_field.name!r} must be {names}, not {value!r}")
        if self.endpoint not in ENDPOINTS:
            raise JudgeSpecError(f"'endpoint' must be one of {', '.join(ENDPOINTS)}, not {self.endpoint!r}")
        for key in ("top_logprobs", "max_concurrency"):
            if getattr(self, key) < 1:
                raise JudgeSpecError(f"{key!r} must be >= 1, not {getattr(self, key)}")
        if self.max_retries < 0 or self.timeout <= 0:
            raise JudgeSpecError("'max_retries' must be >= 0 and 'timeout' > 0")
        try:
            prompt = self.prompt if isinstance(self.prompt, JudgePrompt) else load_prompt(self.prompt)
        except ProtocolError as exc:
            raise JudgeSpecError(str(exc)) from None
        object.__setattr__(self, "_judge_prompt", prompt)
        if self.is_local and (prompt.mode != "logprobs" or self.endpoint != "chat"):
            raise JudgeSpecError(
                "base_url 'local' (an in-process judge) reads the answer token's logits: it needs a logprobs-mode "
                "prompt and endpoint 'chat'"
            )
        if prompt.mode != "logprobs":
            if self.exact_answer_logprobs:
                raise JudgeSpecError("'exact_answer_logprobs' needs a logprobs-mode prompt")
            if self.endpoint == "classify":
                raise JudgeSpecError(
                    "endpoint 'classify' needs a logprobs-mode prompt (the classifier reads Yes/No)"
                )

    # ------------------------------------------------------------------------------------------ reading

    @classmethod
    def yaml_keys(cls) -> set[str]:
        return {f.name for f in fields(cls) if f.metadata.get("yaml", True)}

    @classmethod
    def from_yaml(cls, path: str | Path) -> JudgeSpec:
        """Read and validate one judge config file; JudgeSpecError names the file and the field at fault."""
        source = Path(path)
        try:
            raw = yaml.safe_load(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise JudgeSpecError(f"{source}: judge config does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise JudgeSpecError(f"{source}: cannot be read ({exc})") from None
        except yaml.YAMLError as exc:
            raise JudgeSpecError(f"{source}: not valid YAML ({exc})") from None
        if not isinstance(raw, dict):
            raise JudgeSpecError(f"{source}: a judge config must be a mapping of fields")
        return cls.from_mapping(raw, source)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], source: str | Path | None = None) -> JudgeSpec:
        """A judge config (the parsed YAML): its keys are the fields, an empty value means the default."""
        where = f"{source}: " if source is not None else ""
        known = cls.yaml_keys()
        unknown = sorted(map(str, set(raw) - known))
        if unknown:
            raise JudgeSpecError(
                f"{where}unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        values = {key: value for key, value in raw.items() if value is not None}
        if isinstance(values.get("prompt"), str):
            values["prompt"] = str(_find_prompt(values["prompt"], Path(source) if source else None))
        try:
            spec = cls(**values, source=None if source is None else str(source))
        except JudgeSpecError as exc:
            raise JudgeSpecError(f"{where}{exc}") from None
        name = spec.name
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise JudgeSpecError(f"{where}'name' is required: letters, digits, '-', '_', '.' (got {name!r})")
        if not spec.model and not spec.model_env:
            raise JudgeSpecError(f"{where}'model' (or 'model_env') is required")
        if not spec.base_url and not spec.base_url_env:
            raise JudgeSpecError(f"{where}'base_url' or 'base_url_env' is required")
        return spec

    def resolve(self, env: Mapping[str, str] | None = None) -> JudgeSpec:
        """The spec with endpoint, model, key and revision taken from their `*_env` variables where set;
        JudgeUnavailable (with the reason) when one the judge needs is missing."""
        env = os.environ if env is None else env

        def from_env(var: str | None) -> str | None:
            value = env.get(var, "").strip() if var else ""
            return value or None

        base_url = from_env(self.base_url_env) or self.base_url
        if not base_url:
            raise JudgeUnavailable(f"{self.base_url_env} not set")
        api_key = from_env(self.api_key_env) or self.api_key
        needs_key = (
            self.api_key_required if self.api_key_required is not None else self.api_key_env is not None
        )
        if needs_key and not api_key:
            raise JudgeUnavailable(f"{self.api_key_env} not set")
        model = from_env(self.model_env) or self.model
        if not model:
            raise JudgeUnavailable(f"{self.model_env} not set")
        revision = from_env(self.revision_env) or self.revision
        return replace(self, base_url=base_url.rstrip("/"), model=model, api_key=api_key, revision=revision)

    # ------------------------------------------------------------------------------------------ derived

    @property
    def is_local(self) -> bool:
        """An in-process judge (base_url "local"): `model` is a checkpoint folder."""
        return self.base_url == LOCAL

    @property
    def judge_prompt(self) -> JudgePrompt:
        return self._judge_prompt  # type: ignore[attr-defined]  (set in __post_init__)

    @property
    def mode(self) -> str:
        return self.judge_prompt.mode

    @property
    def prompt_path(self) -> Path | None:
        """The prompt file (None when the spec was given a JudgePrompt object)."""
        if isinstance(self.prompt, JudgePrompt):
            return None
        return Path(self.prompt).resolve() if self.prompt else DEFAULT_PROMPT_FILE

    def config_hash(self) -> str:
        """Hash of everything that changes the judge's answers (not the endpoint URL, concurrency or timeouts:
        moving a server or retuning the client must not throw a results cache away)."""
        path = self.prompt_path
        prompt_bytes = path.read_bytes() if path else json.dumps(asdict(self.judge_prompt)).encode()
        payload = {
            "model": self.model,
            "mode": self.mode,
            "prompt_version": self.judge_prompt.version,
            "prompt_sha256": hashlib.sha256(prompt_bytes).hexdigest(),
            "top_logprobs": self.top_logprobs,
            "exact_answer_logprobs": self.exact_answer_logprobs,
            "extra_body": self.extra_body,
            "revision": self.revision,
        }
        if self.endpoint != "chat":  # only when set, so hashes (cache keys) of chat judges stay as they were
            payload["endpoint"] = self.endpoint
        if self.is_local:  # a checkpoint folder can be retrained in place: its weight files are part of the judge
            payload["weights"] = [
                [f.name, f.stat().st_size, f.stat().st_mtime_ns]
                for f in sorted(Path(str(self.model)).glob("*.safetensors"))
            ]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """What a report shows about this judge (never the key)."""
        return {
            "name": self.name,
            "config": self.source,
            "base_url": self.base_url,
            "model": self.model,
            "mode": self.mode,
            "prompt": str(self.prompt_path or self.judge_prompt.source),
            "prompt_version": self.judge_prompt.version,
            "top_logprobs": self.top_logprobs,
            "exact_answer_logprobs": self.exact_answer_logprobs,
            "max_concurrency": self.max_concurrency,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "extra_body": self.extra_body,
            "revision": self.revision,
            "config_hash": self.config_hash(),
            "description": self.description,
        }


def _allowed_types(hint: Any) -> tuple[type, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return tuple(t for arg in typing.get_args(hint) for t in _allowed_types(arg))
    return (typing.get_origin(hint) or hint,)


_FIELD_TYPES = {name: _allowed_types(hint) for name, hint in typing.get_type_hints(JudgeSpec).items()}


def _find_prompt(value: str, source: Path | None) -> Path:
    """A relative prompt path is looked up from the current directory, the project root, the config's folder."""
    path = Path(value)
    if path.is_absolute():
        return path
    for base in (Path.cwd(), PROJECT_ROOT, source.parent if source else None):
        if base is not None and (base / path).is_file():
            return (base / path).resolve()
    return (PROJECT_ROOT / path).resolve()  # load_prompt then names the missing file
