"""The judge client: one image per request to any OpenAI-compatible server (vLLM serving the fine-tuned judge,
GPT-5.x, a Qwen endpoint), p_defect through the shared protocol.

    from vlm_judge.client import JudgeClient
    with JudgeClient(base_url="http://127.0.0.1:8000/v1", model="defect-judge") as judge:
        results = judge.score_batch(["a.png", "b.jpg"])      # one JudgeResult per input, same order

Two modes, chosen by the prompt file (vlm_judge.protocol):
- "logprobs" (default): max_tokens=1, temperature=0, logprobs=True, top_logprobs=k; p_defect = P(Yes)/(P(Yes)+P(No))
  over the first answer token. With a vLLM server, `answer_token_ids` (see fetch_answer_token_ids) asks for the
  exact log-probabilities of every Yes/No token variant instead of the top k, which makes p_defect equal the HF
  reference even when the answer words are not among the top k (an untrained model).
- "verbalized" (models whose API returns no logprobs): the model replies with strict JSON
  {"defect_probability": p, "defects": [...]}, requested with response_format=json_schema. If the server answers
  400 naming response_format/json_schema (no structured-output support), the client drops response_format for
  that request and every later one (the prompt itself asks for JSON and the parser is strict), and says so once
  in the log. No temperature or max_tokens is sent in this mode: reasoning models reject them; pass them through
  `extra_body` where a server wants them.

With endpoint="classify" (a server started with `python -m vlm_judge.serve --mode classify`), each image is one
/classify request and p_defect is the share of the defect-word labels of vLLM's classifier (same rule, see
serve.py); the request goes through the openai SDK's generic post, so timeouts, retries and errors are the same.

Failure policy: a per-item failure never raises; it becomes JudgeResult.error, a string "Kind: message".
Retried with exponential backoff and jitter: connection errors, timeouts, HTTP 429 (Retry-After honoured) and
5xx. Never retried: other 4xx (400 bad request, 401, 403, 404 unknown model, 422) and answers that do not fit the
protocol; a bad image is an ImageError before any request is made.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlm_judge.images import ImageError, ImageSource, describe, load_image, to_data_url
from vlm_judge.protocol import (
    AnswerNotFoundError,
    JudgePrompt,
    ProtocolError,
    answer_token_ids,
    load_prompt,
    openai_messages,
    p_defect_from_top_logprobs,
    parse_verbalized_answer,
    verbalized_response_format,
)

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5  # first retry after ~0.5 s, then 1, 2, 4 ... (x 0.5..1.5 jitter)
BACKOFF_CAP_S = 10.0
RETRY_AFTER_CAP_S = 30.0  # a server asking for a longer pause than this is treated as down


@dataclass(frozen=True)
class JudgeResult:
    image: str  # input name (path or caller-given id)
    p_defect: float | None
    error: str | None  # "Kind: message", e.g. "ImageError: image 'x.png': truncated file"; None when scored
    latency_ms: float | None  # wall time of the request incl. retries (None when no request was made)
    defects: tuple[str, ...] = ()  # verbalized mode only
    attempts: int = 1  # HTTP requests made (0 when the image failed before any request)

    @property
    def ok(self) -> bool:
        return self.error is None and self.p_defect is not None


class _Failure(Exception):
    """A per-item failure with its name, turned into JudgeResult.error."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        self.message = message
        super().__init__(f"{kind}: {message}")


def _resolve_prompt(prompt: str | Path | JudgePrompt | None) -> JudgePrompt:
    return prompt if isinstance(prompt, JudgePrompt) else load_prompt(prompt)


def _name_of(image: ImageSource, name: str | None) -> str:
    return name if name is not None else describe(image)


class AsyncJudgeClient:
    """Async judge client; see the module docstring for modes and the failure policy."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        prompt: str | Path | JudgePrompt | None = None,
        top_logprobs: int = 20,
        max_concurrency: int = 8,
        timeout: float = 30.0,
        max_retries: int = 3,
        extra_body: dict | None = None,
        answer_token_ids: Sequence[int] | None = None,
        endpoint: str = "chat",
    ):
        import openai

        if endpoint not in ("chat", "classify"):
            raise ValueError(f"endpoint must be 'chat' or 'classify', not {endpoint!r}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, not {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, not {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.prompt = _resolve_prompt(prompt)
        self.top_logprobs = int(top_logprobs)
        self.max_concurrency = int(max_concurrency)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.extra_body = dict(extra_body or {})
        if answer_token_ids:
            self.extra_body["logprob_token_ids"] = [int(i) for i in answer_token_ids]
        self.endpoint = endpoint
        if endpoint == "classify" and self.prompt.mode != "logprobs":
            raise ValueError("endpoint='classify' needs a logprobs-mode prompt (the classifier reads Yes/No)")
        self._defect_labels: int | None = None  # classify: how many of the labels are defect-word variants
        self._use_response_format = True
        # Retries are ours (counted, policy above), so the SDK's own are off.
        self._openai = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key or "EMPTY", timeout=self.timeout, max_retries=0
        )
        self._semaphore = asyncio.Semaphore(self.max_concurrency)

    @property
    def mode(self) -> str:
        return self.prompt.mode

    async def aclose(self) -> None:
        await self._openai.close()

    async def __aenter__(self) -> AsyncJudgeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------------------------ scoring

    async def score(self, image: ImageSource, name: str | None = None) -> JudgeResult:
        """Score one image; never raises for a per-item failure (see JudgeResult.error)."""
        name = _name_of(image, name)
        async with self._semaphore:
            try:
                # Decoding validates the image (a truncated file fails here, not on the server); in a thread so
                # that other requests keep flowing meanwhile.
                url = await asyncio.to_thread(_data_url, image, name)
            except ImageError as exc:
                return JudgeResult(name, None, f"ImageError: {exc}", None, attempts=0)
            except Exception as exc:  # never let one input sink the batch
                return JudgeResult(name, None, f"ImageError: image {name!r}: {exc}", None, attempts=0)
            return await self._request_with_retries(name, url)

    async def score_batch(
        self,
        images: Sequence[ImageSource],
        names: Sequence[str] | None = None,
        *,
        on_result: Callable[[int, JudgeResult], None] | None = None,
        progress: bool = False,
    ) -> list[JudgeResult]:
        """One result per input, in input order; `on_result(index, result)` is called as each item finishes."""
        if names is not None and len(names) != len(images):
            raise ValueError(f"{len(names)} names for {len(images)} images")
        from tqdm.auto import tqdm

        results: list[JudgeResult | None] = [None] * len(images)
        failed = 0
        with tqdm(total=len(images), desc="judging", unit="img", disable=not progress) as bar:
            pending = iter(range(len(images)))

            async def worker() -> None:
                # A fixed pool of workers pulling indices: memory stays flat for batches of any size.
                nonlocal failed
                for index in pending:
                    result = await self.score(images[index], None if names is None else names[index])
                    results[index] = result
                    failed += not result.ok
                    bar.update(1)
                    if failed:
                        bar.set_postfix(failed=failed, refresh=False)
                    if on_result is not None:
                        on_result(index, result)  # an exception here (e.g. disk full) stops the batch

            try:
                async with asyncio.TaskGroup() as group:  # a failing callback cancels the other workers
                    for _ in range(min(self.max_concurrency, len(images))):
                        group.create_task(worker())
            except BaseExceptionGroup as exc_group:
                raise exc_group.exceptions[0] from None
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------------------------------ requests

    def _request_kwargs(self, url: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "messages": openai_messages(self.prompt, url)}
        if self.mode == "logprobs":
            kwargs.update(max_tokens=1, temperature=0, logprobs=True)
            if "logprob_token_ids" not in self.extra_body:
                kwargs["top_logprobs"] = self.top_logprobs
        elif self._use_response_format:
            kwargs["response_format"] = verbalized_response_format()
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        return kwargs

    async def _request_with_retries(self, name: str, url: str) -> JudgeResult:
        import openai

        start = time.perf_counter()
        attempts = 0  # HTTP requests made
        failures = 0  # retryable failures so far
        while True:
            attempts += 1
            delay = None
            try:
                if self.endpoint == "classify":
                    p_defect, defects = await self._classify(url), ()
                else:
                    response = await self._openai.chat.completions.create(**self._request_kwargs(url))
                    p_defect, defects = self._parse(response)
                return JudgeResult(name, p_defect, None, _ms(start), defects=defects, attempts=attempts)
            except openai.APITimeoutError:
                last = _Failure("TimeoutError", f"no answer from {self.base_url} within {self.timeout:g} s")
            except openai.APIConnectionError as exc:
                last = _Failure("ConnectionError", f"cannot reach {self.base_url} ({_cause(exc)})")
            except openai.RateLimitError as exc:
                last = _Failure("RateLimitError", _status_text(exc))
                delay = _retry_after(exc)
            except openai.InternalServerError as exc:  # any status >= 500
                last = _Failure("ServerError", _status_text(exc))
            except openai.APIStatusError as exc:
                if self._should_drop_response_format(exc):
                    continue  # the same image again, as a different request (not a retry)
                return JudgeResult(
                    name, None, str(_client_error(exc, self.model)), _ms(start), attempts=attempts
                )
            except _Failure as exc:
                return JudgeResult(name, None, str(exc), _ms(start), attempts=attempts)
            except (json.JSONDecodeError, openai.APIResponseValidationError) as exc:
                error = f"ProtocolError: the server's answer is not a chat completion ({str(exc)[:200]})"
                return JudgeResult(name, None, error, _ms(start), attempts=attempts)
            except Exception as exc:
                # e.g. a response the SDK cannot validate: named, never fatal to the batch
                error = f"{type(exc).__name__}: {str(exc)[:300]}"
                return JudgeResult(name, None, error, _ms(start), attempts=attempts)
            failures += 1
            if failures > self.max_retries:
                suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
                return JudgeResult(name, None, f"{last}{suffix}", _ms(start), attempts=attempts)
            if delay is None:
                delay = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (failures - 1)) * (0.5 + random.random())
            await asyncio.sleep(delay)

    async def _classify(self, url: str) -> float:
        """p_defect from vLLM's /classify (python -m vlm_judge.serve --mode classify): the classifier's labels are
        the defect word's single-token variants, then the clean word's (protocol.answer_token_ids order), so
        P(Yes)/(P(Yes)+P(No)) is the share of the first ones - the same rule as the logprob path."""
        if self._defect_labels is None:
            defect_ids, _ = await asyncio.to_thread(
                fetch_answer_token_id_groups,
                self.base_url,
                self.model,
                prompt=self.prompt,
                api_key=self._openai.api_key,
                timeout=self.timeout,
            )
            self._defect_labels = len(defect_ids)
        body = {
            "model": self.model,
            "messages": openai_messages(self.prompt, url),
            "add_generation_prompt": True,  # /classify defaults it to false: read the answer position
        }
        response = await self._openai.post(
            f"{server_root(self.base_url)}/classify", cast_to=object, body=body
        )
        try:
            probs = [float(p) for p in response["data"][0]["probs"]]
        except (KeyError, IndexError, TypeError, ValueError):
            raise _Failure("ProtocolError", f"not a /classify answer: {str(response)[:200]}") from None
        if len(probs) == 1:  # a from_2_way_softmax classifier: sigmoid(Yes - No) of the bare words
            return probs[0]
        if len(probs) <= self._defect_labels:
            raise _Failure(
                "ProtocolError",
                f"/classify returned {len(probs)} labels; a judge classifier has {self._defect_labels} defect-word "
                "labels plus the clean-word ones (start it with python -m vlm_judge.serve --mode classify)",
            )
        total = sum(probs)
        return sum(probs[: self._defect_labels]) / total if total > 0 else 0.5

    def _should_drop_response_format(self, exc: Any) -> bool:
        if self.mode != "verbalized" or not self._use_response_format or exc.status_code != 400:
            return False
        text = str(exc).lower()
        if "response_format" not in text and "json_schema" not in text:
            return False
        self._use_response_format = False
        logger.warning(
            "%s rejected response_format (%s); sending the verbalized prompt without structured output from now on",
            self.base_url,
            _status_text(exc),
        )
        return True

    def _parse(self, response: Any) -> tuple[float, tuple[str, ...]]:
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise _Failure("ProtocolError", "the server returned no choices")
        choice = choices[0]
        if self.mode == "verbalized":
            message = choice.message
            refusal = getattr(message, "refusal", None)
            if refusal:
                raise _Failure("RefusalError", f"the model refused: {str(refusal)[:200]!r}")
            try:
                answer = parse_verbalized_answer(message.content)
            except ProtocolError as exc:
                raise _Failure("ProtocolError", str(exc)) from None
            return answer.p_defect, answer.defects
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if not content:
            raise _Failure(
                "ProtocolError",
                "the server returned no logprobs (does this model/API support them? use a verbalized prompt if not)",
            )
        candidates = content[0].top_logprobs or []
        if not candidates:
            raise _Failure("ProtocolError", "the server returned no top_logprobs for the first answer token")
        try:
            return p_defect_from_top_logprobs(candidates, self.prompt), ()
        except AnswerNotFoundError as exc:
            raise _Failure("AnswerNotFoundError", str(exc)) from None
        except (ProtocolError, TypeError, ValueError) as exc:
            raise _Failure("ProtocolError", f"malformed logprobs: {exc}") from None


def _data_url(image: ImageSource, name: str) -> str:
    return to_data_url(load_image(image, name=name))


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc) or type(cause or exc).__name__
    return text[:200]


def _status_text(exc: Any) -> str:
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {exc.status_code}: {str(message or getattr(exc, 'message', None) or exc)[:300]}"


def _retry_after(exc: Any) -> float | None:
    try:
        value = float(exc.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None
    return min(max(value, 0.0), RETRY_AFTER_CAP_S)


def _client_error(exc: Any, model: str) -> _Failure:
    status = exc.status_code
    kind = {
        400: "BadRequestError",
        401: "AuthenticationError",
        403: "PermissionDeniedError",
        404: "NotFoundError",
        422: "UnprocessableEntityError",
    }.get(status, "HTTPError")
    text = _status_text(exc)
    if status == 404:
        text += f" (is model {model!r} served at this URL?)"
    return _Failure(kind, text)


# ---------------------------------------------------------------------------------------------- sync facade


class _LoopThread:
    """A private event loop in a daemon thread: the sync client keeps one connection pool across calls and works
    inside programs that already run a loop (notebooks, trainers)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="judge-client-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Any) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        if not self.thread.is_alive():
            self.loop.close()


class JudgeClient:
    """Synchronous facade over AsyncJudgeClient (same arguments, same results).

    `on_result` callbacks run on the client's own loop thread, one at a time."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        prompt: str | Path | JudgePrompt | None = None,
        top_logprobs: int = 20,
        max_concurrency: int = 8,
        timeout: float = 30.0,
        max_retries: int = 3,
        extra_body: dict | None = None,
        answer_token_ids: Sequence[int] | None = None,
        endpoint: str = "chat",
    ):
        self._runner = _LoopThread()

        async def make() -> AsyncJudgeClient:
            return AsyncJudgeClient(
                base_url,
                model,
                api_key=api_key,
                prompt=prompt,
                top_logprobs=top_logprobs,
                max_concurrency=max_concurrency,
                timeout=timeout,
                max_retries=max_retries,
                extra_body=extra_body,
                answer_token_ids=answer_token_ids,
                endpoint=endpoint,
            )

        try:
            self.aclient: AsyncJudgeClient = self._runner.run(make())
        except BaseException:
            self._runner.close()
            raise

    @property
    def prompt(self) -> JudgePrompt:
        return self.aclient.prompt

    @property
    def model(self) -> str:
        return self.aclient.model

    @property
    def base_url(self) -> str:
        return self.aclient.base_url

    def score(self, image: ImageSource, name: str | None = None) -> JudgeResult:
        return self._runner.run(self.aclient.score(image, name))

    def score_batch(
        self,
        images: Sequence[ImageSource],
        names: Sequence[str] | None = None,
        *,
        on_result: Callable[[int, JudgeResult], None] | None = None,
        progress: bool = False,
    ) -> list[JudgeResult]:
        return self._runner.run(
            self.aclient.score_batch(images, names, on_result=on_result, progress=progress)
        )

    def close(self) -> None:
        if not self._runner.loop.is_closed():
            try:
                self._runner.run(self.aclient.aclose())
            finally:
                self._runner.close()

    def __enter__(self) -> JudgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- vLLM helpers


def server_root(base_url: str) -> str:
    """http://host:port/v1 -> http://host:port (where vLLM's /health and /tokenize live)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class _RemoteTokenizer:
    """Just enough of a tokenizer (encode) for protocol.answer_token_ids, backed by vLLM's /tokenize."""

    def __init__(self, http: Any, url: str, model: str):
        self.http, self.url, self.model = http, url, model

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        body = {"model": self.model, "prompt": text, "add_special_tokens": add_special_tokens}
        response = self.http.post(self.url, json=body)
        if response.status_code != 200:
            raise ProtocolError(
                f"{self.url} answered HTTP {response.status_code} ({response.text[:200]}); "
                "exact answer logprobs need a vLLM server"
            )
        return [int(t) for t in response.json()["tokens"]]


def fetch_answer_token_id_groups(
    base_url: str,
    model: str,
    *,
    prompt: str | Path | JudgePrompt | None = None,
    api_key: str | None = None,
    timeout: float = 30.0,
) -> tuple[list[int], list[int]]:
    """vLLM only: (defect-word ids, clean-word ids) of every single-token answer variant, from the server's
    tokenizer (protocol.answer_token_ids over its /tokenize)."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(timeout=timeout, headers=headers) as http:
        tokenizer = _RemoteTokenizer(http, server_root(base_url) + "/tokenize", model)
        return answer_token_ids(tokenizer, _resolve_prompt(prompt))


def fetch_answer_token_ids(
    base_url: str,
    model: str,
    *,
    prompt: str | Path | JudgePrompt | None = None,
    api_key: str | None = None,
    timeout: float = 30.0,
) -> list[int]:
    """vLLM only: the ids of every single-token variant of both answer words, from the server's tokenizer.

    Pass them as JudgeClient(answer_token_ids=...) to get p_defect from exact log-probabilities."""
    defect_ids, clean_ids = fetch_answer_token_id_groups(
        base_url, model, prompt=prompt, api_key=api_key, timeout=timeout
    )
    return defect_ids + clean_ids
