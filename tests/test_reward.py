"""vlm_judge.reward: reward = 1 - p_defect, batch (flow_grpo) and TRL conventions, failure policy."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fake_openai_server import Reply
from PIL import Image

from vlm_judge.reward import DefectReward, RewardError, to_image_sources


@pytest.fixture
def reward(server):
    with DefectReward(server.base_url, "defect-judge", max_retries=0, timeout=5.0) as judge_reward:
        yield judge_reward


def grey_image(level: int) -> Image.Image:
    return Image.new("RGB", (64, 64), (level, level, level))


def test_batch_call_with_pil_images_and_paths(reward, tmp_path):
    path = tmp_path / "a.png"
    grey_image(204).save(path)
    rewards = reward([grey_image(51), str(path)], ["a cat", "a dog"])
    assert rewards == pytest.approx([0.8, 0.2], abs=1e-6)  # 1 - p_defect, p_defect = grey level / 255


def test_tensors_and_arrays_like_a_diffusion_pipeline_returns(reward):
    nchw = torch.stack([torch.full((3, 64, 64), 0.2), torch.full((3, 64, 64), 0.6)])  # float in [0, 1]
    assert reward(nchw) == pytest.approx([0.8, 0.4], abs=1e-6)
    nhwc = np.full((2, 64, 64, 3), 153, dtype=np.uint8)
    assert reward(nhwc) == pytest.approx([0.4, 0.4], abs=1e-6)
    assert [img.size for img in to_image_sources([np.zeros((32, 40, 3), np.float32)])] == [(40, 32)]


def test_flow_grpo_signature(reward):
    scores, info = reward.flow_grpo_fn()(torch.full((1, 3, 64, 64), 0.2), ["a prompt"], [{}])
    assert scores == pytest.approx([0.8], abs=1e-6) and info == {}


def test_failed_items_are_nan_counted_and_the_rest_scores(reward, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    rewards = reward([grey_image(51), str(bad), grey_image(102)])
    assert rewards[0] == pytest.approx(0.8) and math.isnan(rewards[1]) and rewards[2] == pytest.approx(0.6)
    assert (reward.failed, reward.total) == (1, 3) and reward.last_errors[0].startswith("ImageError")


def test_too_many_failures_raise(server, reward):
    server.queue = [Reply.error(500, "judge down")] * 2
    with pytest.raises(
        RewardError, match="2 of 3 images could not be judged.*ServerError: HTTP 500: judge down"
    ):
        reward([grey_image(1), grey_image(2), grey_image(3)])


def test_trl_grpo_trainer_calls_it_as_a_reward_function(server):
    """Drive TRL 1.16's own GRPOTrainer._calculate_rewards with the reward, as GRPO training would."""
    from accelerate import PartialState
    from trl import GRPOTrainer
    from trl.trainer.utils import get_callable_name, is_async_callable

    PartialState()  # a real trainer has one; TRL's warning for an all-NaN row logs through it

    levels = {"a red car": 51, "a blue car": 204, "a broken car": None}

    def render(prompts, completions, **kwargs):  # stands in for a text-to-image pipeline
        assert "trainer_state" in kwargs and kwargs["seed"] == [0, 1, 2]
        return [grey_image(levels[c]) if levels[c] is not None else b"garbage" for c in completions]

    metrics = {}
    with DefectReward(server.base_url, "defect-judge", max_retries=0, image_fn=render) as reward:
        assert get_callable_name(reward) == "defect_reward" and not is_async_callable(reward)
        trainer = SimpleNamespace(
            reward_funcs=[reward],
            reward_processing_classes=[None],
            reward_func_names=[get_callable_name(reward)],
            accelerator=SimpleNamespace(device=torch.device("cpu"), is_main_process=True),
            state=SimpleNamespace(global_step=0),
            args=SimpleNamespace(report_to=[]),
            environments=None,
            _log_completion_extra=lambda *a, **k: None,
            _log_metric=lambda name, value: metrics.setdefault(name, value),
        )
        completions = list(levels)
        inputs = [{"prompt": "describe a car", "seed": i} for i in range(3)]
        rewards = GRPOTrainer._calculate_rewards(
            trainer, inputs, ["describe a car"] * 3, completions, [[1]] * 3
        )
    assert rewards.shape == (3, 1)
    assert rewards[0, 0].item() == pytest.approx(0.8, abs=1e-6)
    assert rewards[1, 0].item() == pytest.approx(0.2, abs=1e-6)
    assert math.isnan(rewards[2, 0].item())  # TRL leaves it out of the group baseline
    assert metrics["defect_reward/failed_frac"] == pytest.approx(1 / 3)


def test_trl_text_completions_without_image_fn_are_a_clear_error(reward):
    with pytest.raises(TypeError, match="image_fn"):
        reward(prompts=["p"], completions=["some text"], completion_ids=[[1]])
