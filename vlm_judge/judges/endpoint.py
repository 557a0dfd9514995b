"""Talking to a judge's endpoint outside the scoring requests: one probe (is it up, does it take the key, does it
serve the model; also vlm_judge.serve's readiness check) and the server's answer-token ids (vLLM's /tokenize)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlm_judge.judges.spec import JudgeSpec
from vlm_judge.protocol import (
    JudgePrompt,
    ProtocolError,
    answer_token_ids_from_encodings,
    answer_variant_texts,
    load_prompt,
)


class EndpointError(ConnectionError):
    """The endpoint does not answer, or rejects the API key."""


class ModelNotServedError(EndpointError):
    """The endpoint answers but does not list the model."""


class NoTokenizerError(ProtocolError):
    """The endpoint has no vLLM /tokenize (a hosted API), so it cannot be asked for given tokens' logprobs."""


def server_root(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port (where vLLM's /health, /tokenize and /classify live)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def sync_openai(base_url: str, api_key: str | None, timeout: float) -> Any:
    """A one-shot openai client without retries (probes tell a dead endpoint from a live one; they do not wait)."""
    import openai

    return openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0)


def probe(spec: JudgeSpec, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Ask GET {base_url}/models once; return the served models' entries (empty when the endpoint has no usable
    /models: some gateways do not, and the requests themselves will tell). Raises EndpointError when the endpoint
    does not answer or rejects the key, ModelNotServedError when it lists models but not `spec.model`.
    A local judge (base_url "local") is probed by its folder: [{"id": model, "root": folder}], or EndpointError."""
    import openai

    if spec.is_local:
        folder = Path(str(spec.model))
        if not (folder / "config.json").is_file():
            raise EndpointError(f"local judge: {folder} is not a model folder (no config.json)")
        return [{"id": spec.model, "root": str(folder.resolve())}]

    url = str(spec.base_url).rstrip("/")
    with sync_openai(url, spec.api_key, min(timeout, spec.timeout)) as client:
        try:
            answer = client.get("/models", cast_to=object)
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise EndpointError(
                f"endpoint {url} unreachable: cannot reach it ({type(cause).__name__}: {cause or 'no answer'})"
            ) from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise EndpointError(f"endpoint {url} rejected the API key (HTTP {exc.status_code})") from None
        except (openai.APIError, ValueError):
            return []
    data = answer.get("data") if isinstance(answer, dict) else None
    models = [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []
    served = [m.get("id") for m in models]
    if served and spec.model not in served:
        raise ModelNotServedError(
            f"model {spec.model!r} is not served at {url} (served: {', '.join(map(str, served[:5]))})"
        )
    return models


def tokenize_body(model: str, text: str) -> dict[str, Any]:
    """A vLLM /tokenize request for one answer variant."""
    return {"model": model, "prompt": text, "add_special_tokens": False}


def tokens_of(answer: Any, url: str) -> list[int]:
    """The ids of a vLLM /tokenize answer; NoTokenizerError when the endpoint did not answer like vLLM."""
    try:
        return [int(t) for t in answer["tokens"]]
    except (KeyError, TypeError, ValueError):
        raise NoTokenizerError(f"{url} did not answer like vLLM's /tokenize: {str(answer)[:200]}") from None


def no_tokenizer(exc: Any, url: str) -> Exception:
    """What an HTTP error of /tokenize means: a rejected key is an EndpointError; anything else says the endpoint
    has no vLLM tokenizer (NoTokenizerError)."""
    import openai

    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return EndpointError(f"endpoint {url} rejected the API key (HTTP {exc.status_code})")
    return NoTokenizerError(
        f"{url} answered HTTP {exc.status_code} ({str(exc)[:200]}); exact answer logprobs need a vLLM server"
    )


def fetch_answer_token_id_groups(
    base_url: str,
    model: str,
    *,
    prompt: str | Path | JudgePrompt | None = None,
    api_key: str | None = None,
    timeout: float = 30.0,
) -> tuple[list[int], list[int]]:
    """vLLM only: (defect-word ids, clean-word ids) of every single-token answer variant, from the server's
    tokenizer (protocol.answer_token_ids_from_encodings over its /tokenize)."""
    import openai

    resolved = prompt if isinstance(prompt, JudgePrompt) else load_prompt(prompt)
    url = server_root(base_url) + "/tokenize"
    encodings = {}
    with sync_openai(base_url, api_key, timeout) as client:
        for text in answer_variant_texts(resolved):
            try:
                answer = client.post(url, cast_to=object, body=tokenize_body(model, text))
            except openai.APIStatusError as exc:
                raise no_tokenizer(exc, url) from None
            except openai.APIConnectionError as exc:
                raise EndpointError(f"endpoint {base_url} unreachable: cannot reach it ({exc})") from None
            encodings[text] = tokens_of(answer, url)
    return answer_token_ids_from_encodings(encodings, resolved)


def fetch_answer_token_ids(base_url: str, model: str, **options: Any) -> list[int]:
    """vLLM only: the ids of every single-token variant of both answer words, from the server's tokenizer (the
    options of fetch_answer_token_id_groups: prompt, api_key, timeout).

    `JudgeSpec(exact_answer_logprobs=True)` makes the client ask for them (or pass JudgeClient(answer_token_ids=))."""
    defect_ids, clean_ids = fetch_answer_token_id_groups(base_url, model, **options)
    return defect_ids + clean_ids
