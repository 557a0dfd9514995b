"""Reshape a tiny base: append ViT blocks to its vision tower, keep only the first language-model layers (LOG runs
81, 83, 84).

    python experiments/grow_vision_tower.py SOURCE_DIR OUTPUT_DIR [--extra_blocks 1] [--text_layers N]

Each new block is a copy of the last one with its output projections (attention proj, MLP fc2) at zero, so the
grown tower computes exactly what the source's does until training moves them (checked and printed). Dropping
language-model layers is free while the LM is still at its random init (the label-free pretraining never trains
it). The output's tiny_model_spec.json gets the new vision_depth / text_layers; a recipe using it sets
`tiny_model` to match; its pretraining.json records this step and nests the source's record under `base`.
Run 84's base: run 83's pretrained 3-block base with `--extra_blocks 0 --text_layers 1`; run 87's: the 3-block
committed base with `--extra_blocks 1`.
"""

import argparse
import copy
import json
import shutil
import sys
from pathlib import Path

import torch

from vlm_judge.images import file_sha256
from vlm_judge.modeling import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--extra_blocks", type=int, default=1)
    parser.add_argument("--text_layers", type=int, default=0, help="keep the first N LM layers (0: all)")
    args = parser.parse_args()
    for name in ("config.json", "tiny_model_spec.json"):
        if not (args.source / name).is_file():
            parser.error(f"source {str(args.source)!r} is not a tiny-model folder (no {name})")
    if args.extra_blocks < 0 or args.text_layers < 0:
        parser.error("--extra_blocks and --text_layers must be >= 0")

    model = load_model(args.source, dtype="float32")
    blocks = model.model.visual.blocks
    for _ in range(args.extra_blocks):
        block = copy.deepcopy(blocks[-1])
        for layer in (block.attn.proj, block.mlp.fc2):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
        blocks.append(block)
    model.config.vision_config.depth = len(blocks)
    spec = json.loads((args.source / "tiny_model_spec.json").read_text())
    spec["vision_depth"] = len(blocks)
    if args.text_layers:
        language_model, text_config = model.model.language_model, model.config.text_config
        language_model.layers = language_model.layers[: args.text_layers]
        text_config.num_hidden_layers = text_config.max_window_layers = args.text_layers
        text_config.layer_types = text_config.layer_types[: args.text_layers]
        spec["text_layers"] = args.text_layers
    model.save_pretrained(args.output)
    for item in args.source.iterdir():  # tokenizer, processor, records
        if item.is_file() and not (args.output / item.name).exists():
            shutil.copy(item, args.output / item.name)
    (args.output / "tiny_model_spec.json").write_text(json.dumps(spec, indent=2))
    source_record = args.source / "pretraining.json"
    changes = [f"vision tower grown to {len(blocks)} ViT blocks (copies of the last, output projections at zero)"]
    if args.text_layers:
        changes.append(f"language model cut to its first {args.text_layers} layer(s)")
    record = {
        "what": f"the stage below reshaped, nothing trained: {'; '.join(changes)}",
        "command": "python experiments/grow_vision_tower.py " + " ".join(sys.argv[1:]),
        "model_sha256": file_sha256(args.output / "model.safetensors"),
        "base": json.loads(source_record.read_text()) if source_record.is_file() else None,
    }
    (args.output / "pretraining.json").write_text(json.dumps(record, indent=2))

    patches, grid = torch.randn(256, 1176), torch.tensor([[1, 16, 16]])
    with torch.no_grad():
        before = load_model(args.source, dtype="float32").model.visual(patches, grid_thw=grid)
        after = load_model(args.output, dtype="float32").model.visual(patches, grid_thw=grid)
    before, after = getattr(before, "pooler_output", before), getattr(after, "pooler_output", after)
    print(f"vision depth {len(blocks)}; largest change of the tower's output {(before - after).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
