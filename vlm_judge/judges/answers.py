"""What a judge server's answer means: a p_defect, or a per-item failure with its kind (JudgeResult).

Kinds: ImageError (before any request), the openai SDK's status-error class names (BadRequestError,
AuthenticationError, NotFoundError, RateLimitError, ... with InternalServerError named ServerError and an unnamed
status HTTPError), ConnectionError, TimeoutError, ProtocolError (an answer outside the protocol), RefusalError,
AnswerNotFoundError (neither answer word among the logprobs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vlm_judge.protocol import (
    AnswerNotFoundError,
    JudgePrompt,
    ProtocolError,
    p_defect_from_top_logprobs,
    parse_verbalized_answer,
)

# How a p_defect was read. "exact", "classify" and "local" read the full answer-token distribution and agree to
# float precision on the same model; "top_k" sees only the k most likely first tokens (hosted APIs without vLLM's
# /tokenize): a variant outside them counts as zero; "verbalized" is the model's own stated probability.
METHODS = ("exact", "classify", "local", "top_k", "verbalized")
RETRIED_KINDS = {"ConnectionError", "TimeoutError", "RateLimitError", "ServerError", "ConflictError"}
_SDK_KINDS = {"InternalServerError": "ServerError", "APIStatusError": "HTTPError"}  # else the SDK class name


@dataclass(frozen=True)
class JudgeResult:
    image: str  # input name (path or caller-given id)
    p_defect: float | None
    error: str | None  # "Kind: message", e.g. "ImageError: image 'x.png': truncated file"; None when scored
    latency_ms: float | None  # wall time of the request incl. retries (None when no request was made)
    defects: tuple[str, ...] = ()  # verbalized mode only
    attempts: int = 1  # HTTP requests made (0 when the image failed before any request)
    error_kind: str | None = None  # the Kind of `error` (ImageError, ServerError, ProtocolError, ...)
    method: str | None = None  # how p_defect was read: one of METHODS (None when no answer was read)

    @property
    def ok(self) -> bool:
        return self.error is None and self.p_defect is not None


def failed(name: str, kind: str, message: str, latency_ms: float | None, attempts: int) -> JudgeResult:
    return JudgeResult(name, None, f"{kind}: {message}", latency_ms, attempts=attempts, error_kind=kind)


class Failure(Exception):
    """A per-item failure with its kind, turned into a failed JudgeResult."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


def describe_failure(exc: Exception, base_url: str, model: str, timeout: float) -> tuple[str, str]:
    """(kind, message) of a failed request: the SDK's exception class names the kind."""
    import openai

    if isinstance(exc, Failure):
        return exc.kind, exc.message
    if isinstance(exc, openai.APITimeoutError):
        return "TimeoutError", f"no answer from {base_url} within {timeout:g} s"
    if isinstance(exc, openai.APIConnectionError):
        return "ConnectionError", f"cannot reach {base_url} ({_cause(exc)})"
    if isinstance(exc, openai.APIStatusError):
        text = status_text(exc)
        if exc.status_code == 404:
            text += f" (is model {model!r} served at this URL?)"
        return _SDK_KINDS.get(type(exc).__name__, type(exc).__name__), text
    if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError)):
        return "ProtocolError", f"the server's answer is not a chat completion ({str(exc)[:200]})"
    return type(exc).__name__, str(exc)[:300]


def parse_chat(response: Any, prompt: JudgePrompt) -> tuple[float, tuple[str, ...]]:
    """(p_defect, defects) of a chat completion in the prompt's mode; Failure when it does not fit."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise Failure("ProtocolError", "the server returned no choices")
    choice = choices[0]
    if prompt.mode == "verbalized":
        message = choice.message
        refusal = getattr(message, "refusal", None)
        if refusal:
            raise Failure("RefusalError", f"the model refused: {str(refusal)[:200]!r}")
        try:
            answer = parse_verbalized_answer(message.content)
        except ProtocolError as exc:
            raise Failure("ProtocolError", str(exc)) from None
        return answer.p_defect, answer.defects
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        raise Failure(
            "ProtocolError",
            "the server returned no logprobs (does this model/API support them? use a verbalized prompt if not)",
        )
    candidates = content[0].top_logprobs or []
    if not candidates:
        raise Failure("ProtocolError", "the server returned no top_logprobs for the first answer token")
    try:
        return p_defect_from_top_logprobs(candidates, prompt), ()
    except AnswerNotFoundError as exc:
        raise Failure("AnswerNotFoundError", str(exc)) from None
    except (ProtocolError, TypeError, ValueError) as exc:
        raise Failure("ProtocolError", f"malformed logprobs: {exc}") from None


def classify_p_defect(response: Any) -> float | None:
    """The `p_defect` a /classify answer carries when vlm_judge's request gate served it (None otherwise)."""
    try:
        value = response["data"][0].get("p_defect")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def parse_classify(response: Any, defect_labels: int) -> float:
    """p_defect from vLLM's /classify answer: the gate's `p_defect` when present; else the classifier's labels are
    the defect word's single-token variants, then the clean word's (protocol.answer_token_ids order), so
    P(Yes)/(P(Yes)+P(No)) is the share of the first `defect_labels` ones - the same rule as the logprob path."""
    carried = classify_p_defect(response)
    if carried is not None:
        return carried
    try:
        probs = [float(p) for p in response["data"][0]["probs"]]
    except (KeyError, IndexError, TypeError, ValueError):
        raise Failure("ProtocolError", f"not a /classify answer: {str(response)[:200]}") from None
    if len(probs) == 1:  # a from_2_way_softmax classifier: sigmoid(Yes - No) of the bare words
        return probs[0]
    if len(probs) <= defect_labels:
        raise Failure(
            "ProtocolError",
            f"/classify returned {len(probs)} labels; a judge classifier has {defect_labels} defect-word "
            "labels plus the clean-word ones (start it with python -m vlm_judge.serve --mode classify)",
        )
    total = sum(probs)
    return sum(probs[:defect_labels]) / total if total > 0 else 0.5


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc) or type(cause or exc).__name__
    return text[:200]


def status_text(exc: Any) -> str:
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {exc.status_code}: {str(message or getattr(exc, 'message', None) or exc)[:300]}"
