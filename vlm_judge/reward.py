"""The judge as an RL reward: reward = 1 - p_defect, scored concurrently through the judge client.

    from vlm_judge.reward import DefectReward
    reward = DefectReward("http://127.0.0.1:8000/v1", "defect-judge")

    # flow_grpo style: a batch of images (PIL, paths, bytes, HWC arrays, or a NCHW float tensor in [0, 1])
    rewards = reward(images, prompts)                    # list[float], NaN for an image that failed
    scorer = reward.flow_grpo_fn()                       # (images, prompts, metadata) -> (scores, {})

    # TRL GRPOTrainer(reward_funcs=[reward]): TRL calls reward(prompts=..., completions=..., **dataset_columns).
    # Its completions are text, so say how a completion becomes an image (e.g. a text-to-image pipeline):
    reward = DefectReward(url, "defect-judge", image_fn=lambda prompts, completions, **kw: pipe(completions).images)
    # (completions that already are images are scored as they are.)

Failure policy: an image the judge could not score (bad image, server error after the client's retries, an
answer outside the protocol) gets NaN in the batch call and None in the TRL call; TRL turns None into NaN and
leaves that completion out of its group's baseline (advantage 0), so one failure does not bend the others'
rewards. Failures are counted (`failed`, `total`, `last_errors`), logged, and reported to TRL through
`log_metric("defect_reward/failed_frac", ...)`. If more than `max_failure_rate` of one batch fails (default 0.5:
the judge is down or misconfigured), RewardError is raised, because training on mostly missing rewards is worse
than stopping.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlm_judge.client import JudgeClient, JudgeResult
from vlm_judge.images import ImageSource
from vlm_judge.judges import JudgeSpec

logger = logging.getLogger(__name__)

REWARD_DEFAULTS = {"max_concurrency": 16, "timeout": 60.0}  # JudgeSpec fields where the reward's defaults differ


class RewardError(RuntimeError):
    """Too many images of one batch could not be scored."""


def to_image_sources(images: Any) -> list[ImageSource]:
    """A batch in any of the usual forms -> a list the client accepts (PIL images, paths or bytes)."""
    from PIL import Image

    if hasattr(images, "detach") and hasattr(
        images, "cpu"
    ):  # torch tensor: NCHW or CHW, float [0, 1] or uint8
        import torch

        tensor = images.detach().cpu()
        if tensor.ndim == 3:
            tensor = tensor.unsqueeze(0)
        if tensor.is_floating_point():
            tensor = (tensor.float() * 255).round().clamp(0, 255)
        images = tensor.to(torch.uint8).permute(0, 2, 3, 1).numpy()
    if hasattr(images, "ndim") and hasattr(images, "dtype"):  # numpy: NHWC or HWC
        import numpy as np

        array = np.asarray(images)
        if array.ndim == 3:
            array = array[None]
        if array.dtype != np.uint8:
            array = np.clip(np.rint(array * 255.0 if array.max(initial=0) <= 1.0 else array), 0, 255).astype(
                np.uint8
            )
        return [Image.fromarray(frame.squeeze(-1) if frame.shape[-1] == 1 else frame) for frame in array]
    if isinstance(images, (str, Path, bytes, Image.Image)):
        return [images]
    return [to_image_sources(item)[0] if hasattr(item, "ndim") else item for item in images]


class DefectReward:
    """reward = 1 - p_defect; see the module docstring for the calling conventions and the failure policy."""

    __name__ = "defect_reward"  # TRL names a reward function's logs after __name__

    def __init__(
        self,
        base_url: str | None = None,
        model: str = "defect-judge",
        *,
        spec: JudgeSpec | None = None,
        answer_token_ids: Sequence[int] | None = None,
        max_failure_rate: float = 0.5,
        image_fn: Callable[..., Sequence[Any]] | None = None,
        client: JudgeClient | None = None,
        **settings: Any,
    ):
        """The judge: `client`, or `spec` (a JudgeSpec), or base_url/model plus any JudgeSpec field as a keyword
        (api_key, prompt, max_concurrency, timeout, max_retries, exact_answer_logprobs, ...). Without a spec the
        reward's defaults are 16 requests in flight and a 60 s timeout (an RL batch is large and must not stall)."""
        if client is None:
            if spec is None:
                spec = JudgeSpec(base_url=base_url, model=model, **{**REWARD_DEFAULTS, **settings})
            elif base_url is not None or settings:
                spec = replace(spec, **settings, **({"base_url": base_url} if base_url is not None else {}))
            client = JudgeClient.from_spec(spec, answer_token_ids=answer_token_ids)
        self.client = client
        self.max_failure_rate = float(max_failure_rate)
        self.image_fn = image_fn
        self.total = 0
        self.failed = 0
        self.last_errors: list[str] = []

    # ------------------------------------------------------------------------------------------ calls

    def score(self, images: Any, prompts: Sequence[str] | None = None) -> list[float]:
        """1 - p_defect per image, NaN where scoring failed. `prompts` are the generation prompts; the judge does
        not read them (it judges defects, not prompt following), they only name items in error messages."""
        results = self._judge(images, prompts)
        return [math.nan if r.p_defect is None else 1.0 - r.p_defect for r in results]

    def __call__(
        self,
        images: Any = None,
        prompts: Sequence[Any] | None = None,
        metadata: Any = None,
        *,
        completions: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float] | list[float | None]:
        """Batch call `reward(images, prompts)` -> list[float], or TRL's `reward(prompts=, completions=, ...)`."""
        if completions is None:
            if images is None:
                raise TypeError("DefectReward needs images: reward(images, prompts) or TRL's completions=...")
            return self.score(images, prompts)
        # TRL: one reward per completion; None (-> NaN in TRL) for a failure.
        if self.image_fn is not None:
            images = self.image_fn(prompts=prompts, completions=completions, **kwargs)
        elif all(_is_image(c) for c in completions):
            images = completions
        else:
            raise TypeError(
                "TRL passed text completions: give DefectReward an image_fn(prompts, completions, **kwargs) that "
                "returns one image per completion (e.g. your text-to-image pipeline)"
            )
        results = self._judge(images, None)
        if len(results) != len(completions):
            raise RewardError(f"image_fn returned {len(results)} images for {len(completions)} completions")
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("defect_reward/failed_frac", sum(not r.ok for r in results) / max(len(results), 1))
        return [None if r.p_defect is None else 1.0 - r.p_defect for r in results]

    def flow_grpo_fn(self) -> Callable[..., tuple[list[float], dict]]:
        """A flow_grpo reward function: (images, prompts, metadata) -> (scores, {})."""

        def _fn(images: Any, prompts: Any = None, metadata: Any = None) -> tuple[list[float], dict]:
            return self.score(images, prompts), {}

        return _fn

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> DefectReward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ internals

    def _judge(self, images: Any, prompts: Sequence[Any] | None) -> list[JudgeResult]:
        sources = to_image_sources(images)
        names = None
        if prompts is not None and len(prompts) == len(sources):
            names = [f"#{i} ({str(p)[:60]})" for i, p in enumerate(prompts)]
        results = self.client.score_batch(sources, names)
        failures = [r for r in results if not r.ok]
        self.total += len(results)
        self.failed += len(failures)
        if failures:
            self.last_errors = [str(r.error) for r in failures[:5]]
            logger.warning(
                "defect reward: %d of %d images failed, e.g. %s",
                len(failures),
                len(results),
                failures[0].error,
            )
            if len(failures) > self.max_failure_rate * len(results):
                raise RewardError(
                    f"{len(failures)} of {len(results)} images could not be judged (max_failure_rate "
                    f"{self.max_failure_rate:g}); first error: {failures[0].error}"
                )
        return results


def _is_image(item: Any) -> bool:
    from PIL import Image

    return isinstance(item, (Image.Image, bytes, Path)) or hasattr(item, "ndim")
