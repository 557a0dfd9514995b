"""The set-up's promises: the CUDA-linked torchvision imports beside the CPU torch, and so does vLLM's Qwen2-VL."""

import subprocess
import sys


def test_environment_check_passes():
    result = subprocess.run([sys.executable, "-m", "vlm_judge.env_check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "environment ok" in result.stdout


def test_qwen2vl_processor_and_qwen_vl_utils_import():
    from qwen_vl_utils import process_vision_info  # noqa: F401
    from transformers import Qwen2VLProcessor  # noqa: F401
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    assert Qwen2VLVideoProcessor().merge_size == 2
