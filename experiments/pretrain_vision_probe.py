"""Experiment: the dense corruption pretraining (vlm_judge.embedded.pretrain) of a tiny model with the probes'
re-initialisations (fan-in gain, whitened patch embedding; runs 23, 24, 32, 42 of LOG.md).

The committed tiny base is made by scripts/pretrain_tiny_base.py; this script adds the init options on top.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import argparse
import json

import torch
from render_whiten import init_weights

from vlm_judge.embedded.pretrain import pretrain_vision_tower
from vlm_judge.modeling import load_model, load_processor
from vlm_judge.training.model_setup import tiny_model_dir

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=500)
ap.add_argument("--lr", type=float, default=0.001)
ap.add_argument("--gain", type=float, default=0.0)
ap.add_argument("--save", default=None)
ap.add_argument("--spec", default="{}")
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--whiten", type=int, default=0, help="whitened patch-embedding init from N clean scenes")
ap.add_argument("--whiten-eps", type=float, default=1e-2)
a = ap.parse_args()
torch.set_num_threads(2)
torch.manual_seed(0)
S = 224
m = str(tiny_model_dir({"min_pixels": S * S, "max_pixels": S * S, **json.loads(a.spec)}))
proc = load_processor(m, min_pixels=S * S, max_pixels=S * S)
model = load_model(m, dtype="float32")
init_weights(model, proc, a.gain, a.whiten, a.whiten_eps)
pretrain_vision_tower(
    model, proc, steps=a.steps, image_size=S, batch_size=a.batch, learning_rate=a.lr,
    on_eval=lambda row: print(json.dumps(row), flush=True),
)
if a.save:
    model.save_pretrained(a.save)
    proc.save_pretrained(a.save)
