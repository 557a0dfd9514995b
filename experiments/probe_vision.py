"""Vision tower alone + a pooled linear head (mean / max / attention pooling): can the tower learn the defects?"""

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
from probe_learning import encode

from vlm_judge.modeling import load_model, load_processor
from vlm_judge.protocol import load_prompt
from vlm_judge.training.model_setup import tiny_model_dir

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--val-data", default=None)
ap.add_argument("--steps", type=int, default=400)
ap.add_argument("--pool", default="mean")
ap.add_argument("--gain", type=float, default=1.0)
ap.add_argument("--lr", type=float, default=0.001)
ap.add_argument("--spec", default="{}")
a = ap.parse_args()
torch.set_num_threads(2)
torch.manual_seed(0)
m = str(tiny_model_dir({"min_pixels": 50176, "max_pixels": 50176, **json.loads(a.spec)}))
proc = load_processor(m, min_pixels=50176, max_pixels=50176)
prompt = load_prompt()
vis = load_model(m, dtype="float32").model.visual.train()
if a.gain:
    with torch.no_grad():
        for mod in vis.modules():
            if isinstance(mod, (torch.nn.Linear, torch.nn.Conv3d)):
                mod.weight.normal_(0, a.gain / mod.weight[0].numel() ** 0.5)
                if mod.bias is not None:
                    mod.bias.zero_()
t = pd.read_csv(Path(a.data) / "labels.csv")
tr = t[t.split == "train"].reset_index(drop=True)
vr = Path(a.val_data or a.data)
vt = pd.read_csv(vr / "labels.csv")
va = vt[vt.split == "validation"].reset_index(drop=True)
trx, grid, *_ = encode(proc, prompt, [str(Path(a.data) / p) for p in tr.image])
vax, *_ = encode(proc, prompt, [str(vr / p) for p in va.image])
ytr = torch.tensor((tr.defect != "none").values, dtype=torch.float32)
H = vis.merger.mlp[-1].out_features if hasattr(vis.merger, "mlp") else 128
head = torch.nn.Linear(H, 1)
att = torch.nn.Linear(H, 1)
opt = torch.optim.AdamW(list(vis.parameters()) + list(head.parameters()) + list(att.parameters()), lr=a.lr)


def fwd(px):
    b = px.shape[0]
    o = vis(px.reshape(-1, px.shape[-1]).float(), grid_thw=grid.expand(b, -1))
    o = o if torch.is_tensor(o) else o.pooler_output
    f = o.reshape(b, -1, o.shape[-1])
    if a.pool == "mean":
        g = f.mean(1)
    elif a.pool == "max":
        g = f.max(1).values
    else:
        g = (torch.softmax(att(f), 1) * f).sum(1)
    return head(g).squeeze(-1)


rng = np.random.default_rng(0)
t0 = time.time()
L = []
for step in range(1, a.steps + 1):
    idx = rng.integers(0, len(tr), 16)
    loss = F.binary_cross_entropy_with_logits(fwd(trx[idx]), ytr[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    L.append(loss.item())
    if step % 100 == 0:
        vis.eval()
        with torch.no_grad():
            z = torch.cat([fwd(vax[i : i + 64]) for i in range(0, len(vax), 64)]).numpy()
        vis.train()
        k = va.defect.values
        c = k == "none"
        out = {
            "step": step,
            "s": round(time.time() - t0),
            "loss": round(np.mean(L[-100:]), 3),
            "auc": round(roc_auc_score(~c, z), 3),
        }
        out.update(
            {
                d: round(roc_auc_score(k[c | (k == d)] == d, z[c | (k == d)]), 2)
                for d in sorted(set(k) - {"none"})
            }
        )
        print(json.dumps(out), flush=True)
