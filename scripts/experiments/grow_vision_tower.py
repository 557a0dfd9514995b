"""Grow a tiny base's vision tower by appending ViT blocks (LOG runs 81, 83).

    python scripts/experiments/grow_vision_tower.py SOURCE_DIR OUTPUT_DIR [EXTRA_BLOCKS]

Each new block is a copy of the last one with its output projections (attention proj, MLP fc2) at zero, so the
grown model computes exactly what the source does until training moves them (checked and printed). The output's
tiny_model_spec.json gets the new vision_depth; a recipe using it sets `tiny_model.vision_depth` to match.
"""

import copy
import json
import shutil
import sys
from pathlib import Path

import torch

from vlm_judge.modeling import load_model


def main(source: str, output: str, extra_blocks: str = "1") -> None:
    source_dir, output_dir = Path(source), Path(output)
    model = load_model(source_dir, dtype="float32")
    blocks = model.model.visual.blocks
    for _ in range(int(extra_blocks)):
        block = copy.deepcopy(blocks[-1])
        for layer in (block.attn.proj, block.mlp.fc2):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
        blocks.append(block)
    model.config.vision_config.depth = len(blocks)
    model.save_pretrained(output_dir)
    for item in source_dir.iterdir():  # tokenizer, processor, records
        if item.is_file() and not (output_dir / item.name).exists():
            shutil.copy(item, output_dir / item.name)
    spec = json.loads((source_dir / "tiny_model_spec.json").read_text())
    (output_dir / "tiny_model_spec.json").write_text(json.dumps({**spec, "vision_depth": len(blocks)}, indent=2))

    patches, grid = torch.randn(256, 1176), torch.tensor([[1, 16, 16]])
    with torch.no_grad():
        before = load_model(source_dir, dtype="float32").model.visual(patches, grid_thw=grid)
        after = load_model(output_dir, dtype="float32").model.visual(patches, grid_thw=grid)
    before, after = getattr(before, "pooler_output", before), getattr(after, "pooler_output", after)
    print(f"vision depth {len(blocks)}; largest output change {(before - after).abs().max().item():.2e}")


if __name__ == "__main__":
    main(*sys.argv[1:])
