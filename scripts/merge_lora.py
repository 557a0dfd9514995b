"""Merge a trained judge (LoRA/QLoRA adapter, or a full fine-tune) into a standalone model folder.

    python scripts/merge_lora.py --adapter runs/qwen2vl-2b-lora --output_dir models/judge-2b

The folder loads with transformers (AutoModelForImageTextToText + AutoProcessor) and vLLM
(`python -m vlm_judge.serve --model DIR`): weights, config, generation config, the processor with the training
pixel bounds, the chat template and judge_metadata.json (base model, git commit, date, recipe, dataset
fingerprint, prompt version, eval metrics).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from vlm_judge.merge import MergeError, merge_judge


@dataclass
class Args:
    adapter: str = field(metadata={"help": "output_dir of recipes/sft.py (adapter or full model)"})
    output_dir: str = field(metadata={"help": "where the merged model goes"})
    base_model: str | None = field(default=None, metadata={"help": "override the adapter's base model path/id"})
    dtype: str | None = field(default=None, metadata={"help": "dtype of the merged weights (default: training dtype)"})


def main() -> int:
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (args,) = HfArgumentParser(Args).parse_args_into_dataclasses()
    try:
        path = merge_judge(args.adapter, args.output_dir, base_model=args.base_model, dtype=args.dtype)
    except MergeError as exc:
        print(f"merge_lora: error: {exc}", file=sys.stderr)
        return 2
    print(f"merged judge saved to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
