"""The async judge client behind vlm_judge.client (whose docstring describes the settings, the two modes and the
failure policy): one image per request to an OpenAI-compatible server, p_defect through the shared protocol."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from vlm_judge.images import ImageError, ImageSource, describe, load_image, to_data_url
from vlm_judge.judges.answers import (
    RETRIED_KINDS,
    JudgeResult,
    classify_p_defect,
    describe_failure,
    failed,
    parse_chat,
    parse_classify,
    status_text,
)
from vlm_judge.judges.endpoint import (
    NoTokenizerError,
    fetch_answer_token_id_groups,
    fetch_answer_token_ids,
    no_tokenizer,
    server_root,
    tokenize_body,
    tokens_of,
)
from vlm_judge.judges.spec import JudgeSpec
from vlm_judge.protocol import (
    answer_token_ids_from_encodings,
    answer_variant_texts,
    openai_messages,
    verbalized_response_format,
)

logger = logging.getLogger(__name__)

# The HTTP requests of the item being scored (the SDK retries inside one call; an httpx request hook counts them).
_ATTEMPTS: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("judge_attempts", default=None)


async def _count_request(request: Any) -> None:
    counter = _ATTEMPTS.get()
    if counter is not None:
        counter[0] += 1


def _name_of(image: ImageSource, name: str | None) -> str:
    return name if name is not None else describe(image)


def _spec_of(
    spec: JudgeSpec | None, base_url: str | None, model: str | None, settings: dict[str, Any]
) -> JudgeSpec:
    given = {**settings, **{k: v for k, v in (("base_url", base_url), ("model", model)) if v is not None}}
    spec = replace(spec, **given) if spec is not None else JudgeSpec(**given)
    if not spec.base_url or not spec.model:
        raise ValueError(
            "a judge client needs base_url and model (resolve() a spec that names them by env var)"
        )
    return spec


class AsyncJudgeClient:
    """Async judge client; see the module docstring for settings, modes and the failure policy."""

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        *,
        spec: JudgeSpec | None = None,
        answer_token_ids: Sequence[int] | None = None,
        **settings: Any,
    ):
        import openai

        self.spec = spec = _spec_of(spec, base_url, model, settings)
        self.base_url = str(spec.base_url).rstrip("/")
        self.model = str(spec.model)
        self.prompt = spec.judge_prompt
        self.endpoint = spec.endpoint
        self.max_concurrency = spec.max_concurrency
        self.timeout = spec.timeout
        self.extra_body = dict(spec.extra_body)
        # Exact answer logprobs (every Yes/No token variant) wherever the endpoint can: the ids come from the server's
        # own tokenizer (vLLM's /tokenize). Required (True): asked now, so a non-vLLM endpoint fails here with the
        # reason. Default (None): asked with the first request; an endpoint without /tokenize gets the top k.
        self._answer_ids: list[int] | None = None
        self._answer_ids_decided = not self._reads_answer_logprobs or spec.exact_answer_logprobs is False
        if answer_token_ids is not None:
            self._answer_ids, self._answer_ids_decided = [int(i) for i in answer_token_ids], True
        elif spec.exact_answer_logprobs and self._reads_answer_logprobs:
            self._answer_ids = fetch_answer_token_ids(
                self.base_url, self.model, prompt=self.prompt, api_key=spec.api_key, timeout=spec.timeout
            )
            self._answer_ids_decided = True
        self._answer_ids_lock = asyncio.Lock()
        self._defect_labels: int | None = None  # classify: how many of the labels are defect-word variants
        self._use_response_format = True
        self._openai = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=spec.api_key or "EMPTY",
            timeout=self.timeout,
            max_retries=spec.max_retries,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [_count_request]}),
        )
        self._semaphore = asyncio.Semaphore(self.max_concurrency)

    @classmethod
    def from_spec(cls, spec: JudgeSpec, **kwargs: Any) -> AsyncJudgeClient:
        return cls(spec=spec, **kwargs)

    @property
    def mode(self) -> str:
        return self.prompt.mode

    @property
    def _reads_answer_logprobs(self) -> bool:
        return self.mode == "logprobs" and self.endpoint == "chat"

    async def _decide_answer_ids(self) -> None:
        """Ask the server once, with the first request, for the answer-token ids (`_answer_ids`; None: the top k)."""
        async with self._answer_ids_lock:
            if not self._answer_ids_decided:
                try:
                    self._answer_ids = await self._fetch_answer_ids()
                except NoTokenizerError as exc:  # a hosted API: no vLLM /tokenize
                    logger.info("%s: reading the top %d logprobs (%s)", self.base_url, self.spec.top_logprobs, exc)
                # Decided either way; a connection error propagates (the item fails, the next one asks again).
                self._answer_ids_decided = True

    async def _fetch_answer_ids(self) -> list[int]:
        """The answer-token ids from the server's /tokenize, through this client (its retries and key)."""
        import openai

        url = f"{server_root(self.base_url)}/tokenize"
        encodings = {}
        for text in answer_variant_texts(self.prompt):
            try:
                answer = await self._openai.post(url, cast_to=object, body=tokenize_body(self.model, text))
            except openai.APIStatusError as exc:
                raise no_tokenizer(exc, url) from None
            encodings[text] = tokens_of(answer, url)
        defect_ids, clean_ids = answer_token_ids_from_encodings(encodings, self.prompt)
        return defect_ids + clean_ids

    @property
    def method(self) -> str | None:
        """How this client reads p_defect (answers.METHODS); None until the first request decided exact vs top k."""
        if self.endpoint == "classify":
            return "classify"
        if self.mode == "verbalized":
            return "verbalized"
        if not self._answer_ids_decided:
            return None
        return "exact" if self._answer_ids else "top_k"

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
                return failed(name, "ImageError", str(exc), None, 0)
            except Exception as exc:  # never let one input sink the batch
                return failed(name, "ImageError", f"image {name!r}: {exc}", None, 0)
            return await self._request(name, url)

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
        extra_body = dict(self.extra_body)
        if self.mode == "logprobs":
            kwargs.update(max_tokens=1, temperature=0, logprobs=True)
            if self._answer_ids:
                extra_body["logprob_token_ids"] = self._answer_ids
            elif "logprob_token_ids" not in extra_body:
                kwargs["top_logprobs"] = self.spec.top_logprobs
        elif self._use_response_format:
            kwargs["response_format"] = verbalized_response_format()
        if extra_body:
            kwargs["extra_body"] = extra_body
        return kwargs

    async def _request(self, name: str, url: str) -> JudgeResult:
        import openai

        start = time.perf_counter()
        attempts = [0]  # HTTP requests made for this item, the SDK's retries included
        _ATTEMPTS.set(attempts)
        try:
            if not self._answer_ids_decided:
                await self._decide_answer_ids()
                attempts[0] = 0  # the one-off answer-id lookup (if this item made it) is not an attempt
            while True:
                try:
                    if self.endpoint == "classify":
                        p_defect, defects = await self._classify(url), ()
                    else:
                        response = await self._openai.chat.completions.create(**self._request_kwargs(url))
                        p_defect, defects = parse_chat(response, self.prompt)
                    return JudgeResult(
                        name,
                        p_defect,
                        None,
                        _ms(start),
                        defects=defects,
                        attempts=attempts[0],
                        method=self.method,
                    )
                except openai.BadRequestError as exc:
                    if not self._should_drop_response_format(exc):
                        raise
                    # the same image again, without response_format (a different request, not a retry)
        except Exception as exc:  # named, never fatal to the batch
            kind, message = describe_failure(exc, self.base_url, self.model, self.timeout)
            if kind in RETRIED_KINDS and attempts[0] > 1:
                message += f" (after {attempts[0]} attempts)"
            return failed(name, kind, message, _ms(start), attempts[0])

    async def _classify(self, url: str) -> float:
        """p_defect from vLLM's /classify (python -m vlm_judge.serve --mode classify); see answers.parse_classify."""
        body = {
            "model": self.model,
            "messages": openai_messages(self.prompt, url),
            "add_generation_prompt": True,  # /classify defaults it to false: read the answer position
        }
        response = await self._openai.post(
            f"{server_root(self.base_url)}/classify", cast_to=object, body=body
        )
        if self._defect_labels is None and classify_p_defect(response) is None:
            # A classifier served without vlm_judge's request gate: count its defect-word labels once.
            defect_ids, _ = await asyncio.to_thread(
                fetch_answer_token_id_groups,
                self.base_url,
                self.model,
                prompt=self.prompt,
                api_key=self.spec.api_key,
                timeout=self.timeout,
            )
            self._defect_labels = len(defect_ids)
        return parse_classify(response, self._defect_labels or 0)

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
            status_text(exc),
        )
        return True


def _data_url(image: ImageSource, name: str) -> str:
    return to_data_url(load_image(image, name=name))


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
