"""Fast learning probe for the tiny Qwen2-VL judge (an experiment tool, not part of the product).

Trains the model on pre-processed pixel values with the judge's readout (Yes/No logit difference at the answer
position) in a bare PyTorch loop, so that ideas can be compared in minutes on one core before they go into
recipes/sft.py. Prints one JSON line per evaluation (validation ROC-AUC overall and per defect type).

    python experiments/probe_learning.py --data data/s224-p1024 --steps 600 [--vision-lr 5e-3] ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import roc_auc_score

from vlm_judge.modeling import build_judge_inputs, load_model, load_processor
from vlm_judge.protocol import answer_token_ids, load_prompt


def answer_log_odds(model, px: torch.Tensor, encoded: tuple, yes: list[int], no: list[int]) -> torch.Tensor:
    """log P(Yes) / P(No) at the answer position for a batch of patchified images sharing one encoded prompt
    (the ids, attention mask, mm token types and grid that encode() returns)."""
    ids, mask, mm, grid = encoded
    b = px.shape[0]
    out = model(
        input_ids=ids.expand(b, -1),
        attention_mask=mask.expand(b, -1),
        mm_token_type_ids=mm.expand(b, -1),
        pixel_values=px.reshape(-1, px.shape[-1]).float(),
        image_grid_thw=grid.expand(b, -1),
        logits_to_keep=1,
    )
    logits = out.logits[:, -1, :].float()
    return torch.logsumexp(logits[:, yes], -1) - torch.logsumexp(logits[:, no], -1)


def encode(processor, prompt, paths: list[str]):
    chunks, grid = [], None
    for start in range(0, len(paths), 64):
        images = [Image.open(p).convert("RGB") for p in paths[start : start + 64]]
        inputs = build_judge_inputs(processor, images, prompt)
        per = inputs["pixel_values"].shape[0] // len(images)
        chunks.append(inputs["pixel_values"].reshape(len(images), per, -1).to(torch.float16))
        grid = inputs["image_grid_thw"][:1]
        ids = inputs["input_ids"][:1]
        mask = inputs["attention_mask"][:1]
        mm = inputs["mm_token_type_ids"][:1]
    return torch.cat(chunks), grid, ids, mask, mm


def patch_targets(px: torch.Tensor) -> torch.Tensor:
    """Self-supervised per-patch targets (MaskFeat-style HOG): gradient-orientation histograms of each 6x6
    quadrant (8 bins, log magnitude) + mean and std of each channel, computed from the patch's own pixels."""
    p = px.float().reshape(-1, 3, 2, 14, 14)[:, :, 0]
    gray = p.mean(1)
    gx = (gray[:, :, 2:] - gray[:, :, :-2])[:, 1:-1, :]
    gy = (gray[:, 2:, :] - gray[:, :-2, :])[:, :, 1:-1]
    mag = torch.sqrt(gx * gx + gy * gy + 1e-8)
    ang = torch.remainder(torch.atan2(gy, gx), torch.pi)
    bins = torch.clamp((ang / torch.pi * 8).long(), 0, 7)
    hist = torch.zeros(p.shape[0], 4, 8)
    quad = (torch.arange(12)[:, None] // 6) * 2 + (torch.arange(12)[None, :] // 6)
    index = (quad[None] * 8 + bins).reshape(p.shape[0], -1)
    hist.view(p.shape[0], -1).scatter_add_(1, index, mag.reshape(p.shape[0], -1))
    return torch.cat([torch.log1p(hist.flatten(1)), p.mean((2, 3)), p.std((2, 3))], dim=1)


def pretrain_vision(
    model, pixels: torch.Tensor, grid: torch.Tensor, steps: int, lr: float, batch: int, seed: int
):
    visual = model.model.visual
    captured = {}
    handle = visual.blocks[-1].register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
    sample = patch_targets(pixels[:256].reshape(-1, pixels.shape[-1]))
    mean, std = sample.mean(0), sample.std(0) + 1e-4
    head = torch.nn.Linear(visual.blocks[-1].mlp.fc2.out_features, sample.shape[1])
    opt = torch.optim.AdamW(list(visual.parameters()) + list(head.parameters()), lr=lr)
    rng = np.random.default_rng(seed)
    t0 = time.time()
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(pixels), batch)
        px = pixels[idx].reshape(-1, pixels.shape[-1]).float()
        visual(px, grid_thw=grid.expand(batch, -1))
        target = (patch_targets(px) - mean) / std
        loss = F.mse_loss(head(captured["h"]), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(
                json.dumps(
                    {"pretrain_step": step, "mse": round(loss.item(), 4), "s": round(time.time() - t0, 1)}
                ),
                flush=True,
            )
    handle.remove()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default=None, help="model dir (default: build the recipe's tiny model)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--vision-lr", type=float, default=None)
    ap.add_argument("--pairwise", type=float, default=0.0, help="weight of a same-prompt ranking loss")
    ap.add_argument("--group", action="store_true", help="batches of whole prompts")
    ap.add_argument("--pairs", action="store_true", help="batches of (defective, clean) pairs of one prompt")
    ap.add_argument("--types", default=None, help="comma list: keep only these defect types (+ clean)")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--pretrain-steps", type=int, default=0)
    ap.add_argument("--pretrain-lr", type=float, default=1e-3)
    ap.add_argument("--val-data", default=None, help="validation split from this dataset instead")
    ap.add_argument(
        "--reinit",
        default="",
        help="comma list of parts (visual,lm) re-initialised with PyTorch's fan-in default",
    )
    ap.add_argument(
        "--aux-maxpool",
        type=float,
        default=0.0,
        help="weight of a max-pooled token classifier on the merger output",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vision-gain", type=float, default=0.0, help="re-init vision weights N(0, gain/sqrt(fan_in))")
    ap.add_argument("--lm-gain", type=float, default=0.0, help="re-init LM layer weights N(0, gain/sqrt(fan_in))")
    ap.add_argument("--save", default=None, help="save the trained model (and processor) here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument(
        "--label",
        default="defect",
        choices=["defect", "label", "bright"],
        help="target: ground truth or votes",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    if args.model is None:
        from vlm_judge.training.model_setup import tiny_model_dir

        args.model = str(tiny_model_dir({"min_pixels": args.side**2, "max_pixels": args.side**2}))
    processor = load_processor(args.model, min_pixels=args.side**2, max_pixels=args.side**2)
    prompt = load_prompt()
    yes, no = answer_token_ids(processor.tokenizer, prompt)
    model = load_model(args.model, dtype="float32")
    model.train()
    for part in filter(None, args.reinit.split(",")):
        root = model.model.visual if part == "visual" else model.model.language_model
        with torch.no_grad():
            for module in root.modules():
                if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d)):
                    module.reset_parameters()

    for gain, root in ((args.vision_gain, model.model.visual), (args.lm_gain, model.model.language_model.layers)):
        if gain:
            with torch.no_grad():
                for module in root.modules():
                    if isinstance(module, (torch.nn.Linear, torch.nn.Conv3d)):
                        fan_in = module.weight[0].numel()
                        module.weight.normal_(0, gain / fan_in**0.5)
                        if module.bias is not None:
                            module.bias.zero_()

    table = pd.read_csv(Path(args.data) / "labels.csv")
    if args.types:
        keep = set(args.types.split(",")) | {"none"}
        table = table[table["defect"].isin(keep)]
    train = table[table["split"] == "train"].reset_index(drop=True)
    if args.max_train:
        train = train.iloc[: args.max_train]
    val_root = Path(args.val_data or args.data)
    vtable = pd.read_csv(val_root / "labels.csv") if args.val_data else table
    if args.types:
        vtable = vtable[vtable["defect"].isin(keep)]
    val = vtable[vtable["split"] == "validation"].reset_index(drop=True)
    t0 = time.time()
    tr_px, grid, ids, mask, mm = encode(processor, prompt, [str(Path(args.data) / p) for p in train["image"]])
    va_px, *_ = encode(processor, prompt, [str(val_root / p) for p in val["image"]])
    if args.label == "bright":  # sanity target: is the image brighter than the median (global, easy)
        bright = tr_px.float().mean(dim=(1, 2))
        y_tr = (bright > bright.median()).float()
        vb = va_px.float().mean(dim=(1, 2))
        val["defect"] = np.where((vb > bright.median()).numpy(), "bright", "none")
    else:
        y_tr = torch.tensor(
            (train["defect"] != "none").astype(float).values
            if args.label == "defect"
            else train["label"].values,
            dtype=torch.float32,
        )
    print(json.dumps({"encoded": len(train) + len(val), "s": round(time.time() - t0, 1)}), flush=True)

    if args.pretrain_steps:
        pretrain_vision(model, tr_px, grid, args.pretrain_steps, args.pretrain_lr, 32, args.seed)
    captured = {}
    aux_head = torch.nn.Linear(model.config.text_config.hidden_size, 1)
    if args.aux_maxpool:
        model.model.visual.merger.register_forward_hook(lambda m, i, o: captured.__setitem__("merged", o))
    vision = [p for n, p in model.named_parameters() if "visual" in n]
    rest = [p for n, p in model.named_parameters() if "visual" not in n]
    opt = torch.optim.AdamW(
        [
            {"params": vision + list(aux_head.parameters()), "lr": args.vision_lr or args.lr},
            {"params": rest, "lr": args.lr},
        ],
        weight_decay=0.0,
    )
    rng = np.random.default_rng(args.seed)
    groups = train.groupby("prompt_id").indices
    group_list = list(groups.values())
    pair_groups = [g for g in group_list if 0 < float(y_tr[g].sum()) < len(g)]

    def forward(px: torch.Tensor) -> torch.Tensor:
        return answer_log_odds(model, px, (ids, mask, mm, grid), yes, no)

    def evaluate(step: int) -> None:
        model.eval()
        with torch.no_grad():
            z = torch.cat([forward(va_px[i : i + 64]) for i in range(0, len(va_px), 64)]).numpy()
        model.train()
        kinds = val["defect"].values
        clean = kinds == "none"
        out = {"step": step, "s": round(time.time() - t_start, 1), "auc": round(roc_auc_score(~clean, z), 3)}
        out["auc_label"] = round(roc_auc_score(val["label"].values, z), 3)
        for kind in sorted(set(kinds) - {"none"}):
            sel = clean | (kinds == kind)
            out[kind] = round(roc_auc_score(kinds[sel] == kind, z[sel]), 3)
        print(json.dumps(out), flush=True)

    t_start = time.time()
    losses = []
    for step in range(1, args.steps + 1):
        if args.pairs:
            chosen = []
            while len(chosen) < args.batch:
                members = pair_groups[int(rng.integers(len(pair_groups)))]
                pos = [i for i in members if y_tr[i] > 0.5]
                neg = [i for i in members if y_tr[i] <= 0.5]
                chosen += [pos[int(rng.integers(len(pos)))], neg[int(rng.integers(len(neg)))]]
            idx = np.array(chosen[: args.batch])
        elif args.group:
            chosen: list[int] = []
            while len(chosen) < args.batch:
                chosen += list(group_list[int(rng.integers(len(group_list)))])
            idx = np.array(chosen[: args.batch])
        else:
            idx = rng.integers(0, len(train), args.batch)
        z = forward(tr_px[idx])
        y = y_tr[idx]
        loss = F.binary_cross_entropy_with_logits(z, y)
        if args.aux_maxpool:
            tokens = aux_head(captured["merged"]).reshape(len(idx), -1)
            loss = loss + args.aux_maxpool * F.binary_cross_entropy_with_logits(tokens.max(1).values, y)
        if args.pairwise:
            pid = train["prompt_id"].values[idx]
            same = torch.tensor(pid[:, None] == pid[None, :]) & (y[:, None] > y[None, :])
            if same.any():
                diff = z[:, None] - z[None, :]
                loss = loss + args.pairwise * F.softplus(-diff[same]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % args.eval_every == 0:
            print(
                json.dumps({"step": step, "loss": round(float(np.mean(losses[-args.eval_every :])), 4)}),
                flush=True,
            )
            evaluate(step)
    if args.save:
        model.save_pretrained(args.save)
        processor.save_pretrained(args.save)


if __name__ == "__main__":
    main()
