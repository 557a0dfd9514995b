"""Build the embedded default model: a tiny random-weight Qwen2-VL with a local tokenizer and processor.

    python scripts/make_tiny_model.py --output_dir models/tiny-qwen2-vl
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from vlm_judge.embedded.tiny_model import TinyModelSpec, make_tiny_model


@dataclass
class Args(TinyModelSpec):
    output_dir: str = field(default="models/tiny-qwen2-vl", metadata={"help": "where to save the model"})


def main() -> None:
    (args,) = HfArgumentParser(Args).parse_args_into_dataclasses()
    spec = TinyModelSpec(**{k: v for k, v in vars(args).items() if k != "output_dir"})
    path = make_tiny_model(args.output_dir, spec)
    print(f"tiny Qwen2-VL saved to {path}")


if __name__ == "__main__":
    main()
