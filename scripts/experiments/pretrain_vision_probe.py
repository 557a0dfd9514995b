"""Experiment: dense corruption-prediction pretraining of the tiny vision tower (+ merger) on clean scenes."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from corruptions import CLASSES, corrupt_regions
from render_whiten import init_weights

from vlm_judge.data.synthetic import make_scene, render_scene
from vlm_judge.modeling import load_model, load_processor
from vlm_judge.training.model_setup import tiny_model_dir

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=500)
ap.add_argument("--lr", type=float, default=0.001)
ap.add_argument("--gain", type=float, default=0.0)
ap.add_argument("--save", default=None)
ap.add_argument("--save-every", type=int, default=0, help="also save to SAVE-stepN every N steps")
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
vis = model.model.visual.train()
init_weights(model, proc, a.gain, a.whiten, a.whiten_eps)
H = model.config.text_config.hidden_size
head = torch.nn.Linear(H, len(CLASSES))
opt = torch.optim.AdamW(list(vis.parameters()) + list(head.parameters()), lr=a.lr)
rng = np.random.default_rng(123)


def batch(n):
    ims, ys = ([], [])
    for _ in range(n):
        scene = make_scene(np.random.default_rng(rng.integers(1 << 62)))
        img, cls = corrupt_regions(render_scene(scene, S, rng), rng)
        ims.append(img)
        onehot = np.eye(len(CLASSES))[cls].reshape(S // 28, 28, S // 28, 28, -1).mean((1, 3))
        ys.append(onehot.reshape(-1, len(CLASSES)))
    px = proc.image_processor(images=ims, return_tensors="pt")
    return (px["pixel_values"], px["image_grid_thw"], torch.tensor(np.concatenate(ys), dtype=torch.float32))


def fwd(px, grid):
    o = vis(px, grid_thw=grid)
    return head(o if torch.is_tensor(o) else o.pooler_output)



def save(folder: str) -> None:
    """A full tiny model folder the recipe loads as model_name_or_path (same spec file, so the spec check passes)."""
    import shutil

    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    shutil.copy(pathlib.Path(m) / "tiny_model_spec.json", folder)


vx, vg, vy = batch(128)
t0 = time.time()
L = []
for step in range(1, a.steps + 1):
    px, g, y = batch(a.batch)
    loss = F.cross_entropy(fwd(px, g), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    L.append(loss.item())
    if step % 100 == 0:
        vis.eval()
        with torch.no_grad():
            z = fwd(vx, vg)
        vis.train()
        hard = vy.argmax(1)
        pred = z.argmax(1)
        acc = {c: round(float((pred[hard == i] == i).float().mean()), 2) for i, c in enumerate(CLASSES)}
        from sklearn.metrics import roc_auc_score

        auc = roc_auc_score((hard > 0).numpy(), (1 - torch.softmax(z, 1)[:, 0]).numpy())
        print(
            json.dumps(
                {
                    "step": step,
                    "s": round(time.time() - t0),
                    "loss": round(np.mean(L[-100:]), 3),
                    "token_auc": round(auc, 3),
                    **acc,
                }
            ),
            flush=True,
        )
    if a.save and a.save_every and step % a.save_every == 0:
        save(f"{a.save}-step{step}")


if a.save:
    save(a.save)
