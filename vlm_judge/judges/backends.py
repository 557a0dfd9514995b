"""The judge backends' one shape (`Judge`), which the OpenAI-compatible client (vlm_judge.client.JudgeClient) and
the in-process HF judge (`LocalJudge`) share; vlm_judge.client.make_judge(spec) picks one: `base_url: local` with
`model` a checkpoint folder (a full model, a merged judge, a training checkpoint) scores in this process, without
a server; anything else is a server.

LocalJudge reads p_defect with modeling.score_images (the reference scorer: the protocol's Yes/No rule over the
full answer-token distribution, so it equals what `exact_answer_logprobs` asks a vLLM server for). Its results are
the client's JudgeResults: a bad image is an ImageError result (attempts 0) and never sinks the batch. Images are
scored `max_concurrency` at a time, in one forward pass per batch; each result's latency_ms is its batch's wall
time divided by the images in it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from vlm_judge.images import ImageError, ImageSource, describe, load_image
from vlm_judge.judges.answers import JudgeResult, failed
from vlm_judge.judges.spec import JudgeSpec, JudgeSpecError

OnResult = Callable[[int, JudgeResult], None]


class Judge(Protocol):
    """What eval.compare, eval.sbs and vlm_judge.score need of a judge."""

    spec: JudgeSpec

    def score_batch(
        self,
        images: Sequence[ImageSource],
        names: Sequence[str] | None = None,
        *,
        on_result: OnResult | None = None,
        progress: bool = False,
    ) -> list[JudgeResult]:
        """One result per input, in input order; `on_result(index, result)` as each item finishes."""
        ...

    def close(self) -> None: ...


class LocalJudge:
    """A checkpoint folder scored in this process (module docstring); `model`/`processor` reuse loaded ones,
    e.g. the model being trained."""

    def __init__(self, spec: JudgeSpec, *, model: Any = None, processor: Any = None) -> None:
        from vlm_judge.modeling import load_model, load_processor

        if not spec.is_local:
            raise JudgeSpecError(f"a LocalJudge needs base_url 'local', not {spec.base_url!r}")
        folder = Path(str(spec.model))
        if (model is None or processor is None) and not (folder / "config.json").is_file():
            raise JudgeSpecError(f"local judge {spec.name or spec.model}: {folder} is not a model folder")
        self.spec = spec
        self.prompt = spec.judge_prompt
        self.batch_size = spec.max_concurrency
        self.processor = processor if processor is not None else load_processor(folder)
        if model is None:
            import torch

            model = load_model(folder).to("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model

    def score(self, image: ImageSource, name: str | None = None) -> JudgeResult:
        return self.score_batch([image], None if name is None else [name])[0]

    def score_batch(
        self,
        images: Sequence[ImageSource],
        names: Sequence[str] | None = None,
        *,
        on_result: OnResult | None = None,
        progress: bool = False,
    ) -> list[JudgeResult]:
        """One result per input, in input order; `on_result(index, result)` as each item finishes."""
        if names is not None and len(names) != len(images):
            raise ValueError(f"{len(names)} names for {len(images)} images")
        from tqdm.auto import tqdm

        results: list[JudgeResult | None] = [None] * len(images)
        pending: list[tuple[int, str, Any]] = []  # decoded images waiting for a full batch
        bar = tqdm(total=len(images), desc="judging", unit="img", disable=not progress)

        def finish(index: int, result: JudgeResult) -> None:
            results[index] = result
            bar.update(1)
            if on_result is not None:
                on_result(index, result)

        def flush() -> None:
            from vlm_judge.modeling import score_images

            start = time.perf_counter()
            scores = score_images(
                self.model,
                self.processor,
                [image for _, _, image in pending],
                prompt=self.prompt,
                batch_size=len(pending),
            )
            latency = (time.perf_counter() - start) * 1000.0 / len(pending)
            for (index, name, _), p_defect in zip(pending, scores, strict=True):
                finish(index, JudgeResult(name, float(p_defect), None, latency, method="local"))
            pending.clear()

        try:
            for index, image in enumerate(images):
                name = names[index] if names is not None else describe(image)
                try:
                    pending.append((index, name, load_image(image, name=name).image))
                except ImageError as exc:
                    finish(index, failed(name, "ImageError", str(exc), None, 0))
                except Exception as exc:  # never let one input sink the batch
                    finish(index, failed(name, "ImageError", f"image {name!r}: {exc}", None, 0))
                if len(pending) == self.batch_size:
                    flush()
            if pending:
                flush()
        finally:
            bar.close()
        return [r for r in results if r is not None]

    def close(self) -> None:
        """Nothing to release beyond the model itself (kept for the Judge shape)."""

    def __enter__(self) -> LocalJudge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
