"""`python -m vlm_judge.env_check`: the imports the CPU embedded default needs, checked in one go."""

import importlib
import sys

MODULES = [
    "torch",
    "torchvision",
    "transformers.processing_utils",
    "transformers.models.qwen2_vl.processing_qwen2_vl",
    "qwen_vl_utils",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "openai",
    "vllm.model_executor.models.qwen2_vl",
]


def main() -> int:
    failed = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # report every failure, not just the first
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    if failed:
        print("environment check failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    import torch
    import transformers
    import trl

    print(f"environment ok: torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
