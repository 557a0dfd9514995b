"""Experiment: pretrain the tiny Qwen2-VL as a captioner of clean synthetic scenes (no defect labels)."""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from vlm_judge.modeling import load_model, load_processor
from vlm_judge.training.model_setup import tiny_model_dir

INSTRUCTION = "Describe this image."

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--steps", type=int, default=2000)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--side", type=int, default=224)
ap.add_argument("--save-every", type=int, default=500)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
src = str(tiny_model_dir({"min_pixels": a.side**2, "max_pixels": a.side**2}))
proc = load_processor(src, min_pixels=a.side**2, max_pixels=a.side**2)
model = load_model(src, dtype="float32")
model.train()
tok = proc.tokenizer
table = pd.read_csv(Path(a.data) / "labels.csv")


def chat(caption=None):
    m = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]}]
    if caption is not None:
        m.append({"role": "assistant", "content": [{"type": "text", "text": caption}]})
    return proc.apply_chat_template(m, tokenize=False, add_generation_prompt=caption is None)


blank = Image.new("RGB", (a.side, a.side))
prefix_len = proc(text=[chat()], images=[blank], return_tensors="pt")["input_ids"].shape[1]
t0 = time.time()
px, ids, mms = [], [], []
for start in range(0, len(table), 64):
    rows = table.iloc[start : start + 64]
    imgs = [Image.open(Path(a.data) / p).convert("RGB") for p in rows["image"]]
    texts = [chat(c) for c in rows["prompt"]]
    for img, text in zip(imgs, texts, strict=True):
        x = proc(text=[text], images=[img], return_tensors="pt")
        px.append(x["pixel_values"].to(torch.float16))
        ids.append(x["input_ids"][0])
        mms.append(x["mm_token_type_ids"][0])
grid = x["image_grid_thw"]
print(
    json.dumps(
        {
            "encoded": len(px),
            "s": round(time.time() - t0, 1),
            "max_len": max(len(i) for i in ids),
            "prefix": prefix_len,
        }
    ),
    flush=True,
)
pad = tok.pad_token_id
opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, s / 100))
rng = np.random.default_rng(0)
losses = []
t0 = time.time()
for step in range(1, a.steps + 1):
    idx = rng.integers(0, len(px), a.batch)
    L = max(len(ids[i]) for i in idx)
    input_ids = torch.full((a.batch, L), pad)
    mask = torch.zeros((a.batch, L), dtype=torch.long)
    mm = torch.zeros((a.batch, L), dtype=torch.long)
    labels = torch.full((a.batch, L), -100)
    for r, i in enumerate(idx):
        n = len(ids[i])
        input_ids[r, :n] = ids[i]
        mask[r, :n] = 1
        mm[r, :n] = mms[i]
        labels[r, prefix_len:n] = ids[i][prefix_len:]
    out = model(
        input_ids=input_ids,
        attention_mask=mask,
        mm_token_type_ids=mm,
        pixel_values=torch.cat([px[i] for i in idx]).float(),
        image_grid_thw=grid.expand(a.batch, -1),
        labels=labels,
    )
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    sched.step()
    losses.append(out.loss.item())
    if step % 50 == 0:
        print(
            json.dumps(
                {
                    "step": step,
                    "loss": round(float(np.mean(losses[-50:])), 4),
                    "s": round(time.time() - t0, 1),
                }
            ),
            flush=True,
        )
    if step % a.save_every == 0 or step == a.steps:
        model.save_pretrained(a.out)
        proc.save_pretrained(a.out)
