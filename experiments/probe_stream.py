"""Experiment: the full tiny judge trained on a stream of unique renders (every image seen once), twins
(clean + defective render of the same scene and jitter) in each batch; validation = a canonical dataset's split."""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from probe_learning import answer_log_odds, encode
from render_whiten import init_weights

from vlm_judge.embedded.synthetic import DEFECT_TYPES, applicable_defects, make_scene, render_generation
from vlm_judge.modeling import build_judge_inputs, load_model, load_processor
from vlm_judge.protocol import answer_token_ids, load_prompt
from vlm_judge.training.model_setup import part_of, tiny_model_dir

ap = argparse.ArgumentParser()
ap.add_argument("--val-data", default="data/s224")
ap.add_argument("--steps", type=int, default=3000)
ap.add_argument("--lr", type=float, default=0.0005)
ap.add_argument("--gain", type=float, default=1.0)
ap.add_argument("--types", default=",".join(DEFECT_TYPES))
ap.add_argument("--area", type=float, nargs=2, default=(0.25, 0.45))
ap.add_argument(
    "--area-start",
    type=float,
    nargs=2,
    default=None,
    help="curriculum: area at step 0, linearly to --area at --ramp",
)
ap.add_argument("--ramp", type=int, default=1000)
ap.add_argument("--first-types", default=None, help="curriculum: only these types until --first-steps")
ap.add_argument("--first-steps", type=int, default=0)
ap.add_argument("--add-every", type=int, default=0, help="curriculum with replay: --types joins one at a time, every N steps")
ap.add_argument("--twins", type=int, default=1)
ap.add_argument("--eval-every", type=int, default=250)
ap.add_argument("--model", default=None)
ap.add_argument("--save", default=None)
ap.add_argument("--whiten", type=int, default=0, help="init the patch embedding from the whitened patch statistics of N clean scenes")
ap.add_argument("--whiten-eps", type=float, default=1e-2)
ap.add_argument("--vision-lr-mult", type=float, default=1.0, help="learning rate of the vision tower (merger excluded) x this")
a = ap.parse_args()
torch.set_num_threads(2)
torch.manual_seed(0)
S = 224
m = a.model or str(tiny_model_dir({"min_pixels": S * S, "max_pixels": S * S}))
proc = load_processor(m, min_pixels=S * S, max_pixels=S * S)
prompt = load_prompt()
yes, no = answer_token_ids(proc.tokenizer, prompt)
model = load_model(m, dtype="float32").train()
init_weights(model, proc, a.gain and not a.model, a.whiten, a.whiten_eps)
vt = pd.read_csv(Path(a.val_data) / "labels.csv")
va = vt[vt.split == "validation"].reset_index(drop=True)
vax, grid, ids, mask, mm = encode(proc, prompt, [str(Path(a.val_data) / p) for p in va.image])
vision = [p for n, p in model.named_parameters() if part_of(n) == "vision_tower"]
rest = [p for n, p in model.named_parameters() if part_of(n) != "vision_tower"]
opt = torch.optim.AdamW(
    [{"params": vision, "lr": a.lr * a.vision_lr_mult}, {"params": rest, "lr": a.lr}], weight_decay=0.0
)
print(json.dumps({"vision_params": sum(p.numel() for p in vision), "rest_params": sum(p.numel() for p in rest)}))
types = a.types.split(",")
rng = np.random.default_rng(1000)


def fwd(px):
    return answer_log_odds(model, px, (ids, mask, mm, grid), yes, no)


def area_at(step):
    if a.area_start is None:
        return tuple(a.area)
    f = min(1.0, max(0, step - a.first_steps) / a.ramp)
    return tuple((s + (e - s) * f for s, e in zip(a.area_start, a.area, strict=False)))


def batch(step, n=16):
    ims, ys = ([], [])
    while len(ims) < n:
        scene = make_scene(np.random.default_rng(rng.integers(1 << 62)))
        allowed = a.first_types.split(",") if a.first_types and step <= a.first_steps else types
        if a.add_every:
            allowed = types[: 1 + (step - 1) // a.add_every]
        choices = applicable_defects(scene, allowed)
        if not choices:
            continue
        seed = rng.integers(1 << 62)
        d = str(rng.choice(choices))
        kinds = ["none", d] if a.twins else [d if rng.uniform() < 0.5 else "none"]
        for kind in kinds:
            ims.append(
                render_generation(
                    scene,
                    S,
                    np.random.default_rng(seed),
                    kind,
                    np.random.default_rng(rng.integers(1 << 62)),
                    area=area_at(step),
                )
            )
            ys.append(float(kind != "none"))
    px = build_judge_inputs(proc, ims[:n], prompt)["pixel_values"]
    return (px.reshape(n, -1, px.shape[-1]), torch.tensor(ys[:n]))


t0 = time.time()
L = []
for step in range(1, a.steps + 1):
    px, y = batch(step)
    loss = F.binary_cross_entropy_with_logits(fwd(px), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    L.append(loss.item())
    if step % a.eval_every == 0:
        model.eval()
        with torch.no_grad():
            z = torch.cat([fwd(vax[i : i + 64]) for i in range(0, len(vax), 64)]).numpy()
        model.train()
        k = va.defect.values
        c = k == "none"
        out = {
            "step": step,
            "s": round(time.time() - t0),
            "area": [round(v, 2) for v in area_at(step)],
            "loss": round(float(np.mean(L[-a.eval_every :])), 3),
            "auc": round(roc_auc_score(~c, z), 3),
            "auc_label": round(roc_auc_score(va.label, z), 3),
        }
        out.update(
            {
                d: round(roc_auc_score(k[c | (k == d)] == d, z[c | (k == d)]), 2)
                for d in sorted(set(k) - {"none"})
            }
        )
        print(json.dumps(out), flush=True)
        if a.save:
            model.save_pretrained(a.save)
            proc.save_pretrained(a.save)
