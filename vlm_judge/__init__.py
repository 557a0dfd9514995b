"""vlm-judge: a Qwen2-VL defect judge for AI-generated images."""

__version__ = "0.1.0"
