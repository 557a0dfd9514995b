"""The judge client: one image per request to any OpenAI-compatible server (vLLM serving the fine-tuned judge,
GPT-5.x, a Qwen endpoint), p_defect through the shared protocol.

    from vlm_judge.client import JudgeClient
    with JudgeClient(base_url="http://127.0.0.1:8000/v1", model="defect-judge") as judge:
        results = judge.score_batch(["a.png", "b.jpg"])      # one JudgeResult per input, same order
    JudgeClient.from_spec(JudgeSpec.from_yaml("baselines/finetuned.yaml").resolve())   # the same from a config

Settings are the fields of vlm_judge.judges.JudgeSpec, as keywords or as a spec. Two modes, by the prompt file:
- "logprobs" (default): max_tokens=1, temperature=0, logprobs=True, top_logprobs=k; p_defect = P(Yes)/(P(Yes)+P(No))
  over the first answer token. `exact_answer_logprobs` (vLLM only; the ids come from the server's tokenizer once,
  when the client is made, or pass `answer_token_ids`) asks for every Yes/No token variant instead of the top k,
  so p_defect equals the HF reference even when the answer words are not among the top k (an untrained model).
- "verbalized" (APIs without logprobs): strict JSON {"defect_probability": p, "defects": [...]}, requested with
  response_format=json_schema. A 400 naming response_format/json_schema (no structured output) makes the client
  drop response_format for that request and every later one (the prompt asks for JSON, the parser is strict),
  logged once. No temperature or max_tokens is sent (reasoning models reject them; use `extra_body`).
`endpoint="classify"` (`python -m vlm_judge.serve --mode classify`): one /classify request per image, p_defect the
share of the defect-word labels (same rule, see vllm_command.py), through the SDK's generic post (same retries, errors).

Failure policy: a per-item failure never raises; it becomes JudgeResult.error ("Kind: message") with the kind in
JudgeResult.error_kind (vlm_judge.judges.answers). Retries are the openai SDK's (`max_retries`; exponential backoff
with jitter, Retry-After honoured): connection errors, timeouts, 408/409/429 and 5xx; never other 4xx (400, 401,
403, 404 unknown model, 422) or answers outside the protocol; a bad image is an ImageError before any request.
JudgeResult.attempts counts the item's HTTP requests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlm_judge.images import ImageSource
from vlm_judge.judges.answers import JudgeResult
from vlm_judge.judges.async_client import AsyncJudgeClient
from vlm_judge.judges.backends import Judge, LocalJudge
from vlm_judge.judges.endpoint import fetch_answer_token_id_groups, fetch_answer_token_ids, server_root
from vlm_judge.judges.loop import LoopThread
from vlm_judge.judges.spec import JudgeSpec
from vlm_judge.protocol import JudgePrompt

__all__ = [
    "AsyncJudgeClient",
    "JudgeClient",
    "JudgeResult",
    "fetch_answer_token_id_groups",
    "fetch_answer_token_ids",
    "make_judge",
    "server_root",
]


def make_judge(spec: JudgeSpec, **kwargs: Any) -> Judge:
    """The backend a (resolved) spec describes: the in-process LocalJudge for `base_url: local` (a checkpoint
    folder), else a JudgeClient of its server."""
    if spec.is_local:
        return LocalJudge(spec, **kwargs)
    return JudgeClient.from_spec(spec, **kwargs)


# ---------------------------------------------------------------------------------------------- sync facade


class JudgeClient:
    """Synchronous facade over AsyncJudgeClient (same arguments, same results).

    `on_result` callbacks run on the client's own loop thread, one at a time."""

    def __init__(self, base_url: str | None = None, model: str | None = None, **kwargs: Any):
        """Same arguments as AsyncJudgeClient: JudgeSpec fields, or spec=, and answer_token_ids=."""
        self._runner = LoopThread()

        async def make() -> AsyncJudgeClient:
            return AsyncJudgeClient(base_url, model, **kwargs)

        try:
            self.aclient: AsyncJudgeClient = self._runner.run(make())
        except BaseException:
            self._runner.close()
            raise

    @classmethod
    def from_spec(cls, spec: JudgeSpec, **kwargs: Any) -> JudgeClient:
        return cls(spec=spec, **kwargs)

    # The async client's settings, read through.
    spec: JudgeSpec = property(lambda self: self.aclient.spec)  # type: ignore[assignment]
    prompt: JudgePrompt = property(lambda self: self.aclient.prompt)  # type: ignore[assignment]
    model: str = property(lambda self: self.aclient.model)  # type: ignore[assignment]
    base_url: str = property(lambda self: self.aclient.base_url)  # type: ignore[assignment]
    method: str | None = property(lambda self: self.aclient.method)  # type: ignore[assignment]

    def score(self, image: ImageSource, name: str | None = None) -> JudgeResult:
        return self._runner.run(self.aclient.score(image, name))

    def score_batch(self, images: Sequence[ImageSource], names: Sequence[str] | None = None, **options: Any) -> list[JudgeResult]:
        """AsyncJudgeClient.score_batch, run to the end (options: on_result, progress)."""
        return self._runner.run(self.aclient.score_batch(images, names, **options))

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
