"""Dense corruption prediction: the vision tower + merger of a Qwen2-VL learn, per visual token, which generic
corruption (or none) covers it, on clean synthetic scenes rendered on the fly (every image new).

Targets are soft: the share of each class among the pixels of a merged token's 28x28 cell. A linear head on the
merger output is the only extra module and is thrown away afterwards; the language model is not touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vlm_judge.embedded.synthetic import make_scene, render_scene

from .corruptions import CLASSES, FIRST_KINDS, corrupt_regions


def _cell_targets(classes: np.ndarray, cell: int, num_classes: int = len(CLASSES)) -> np.ndarray:
    """(H, W) class map -> (tokens, classes) shares per merged-token cell, in the processor's raster order."""
    h, w = classes.shape
    onehot = np.eye(num_classes)[classes]
    return onehot.reshape(h // cell, cell, w // cell, cell, -1).mean((1, 3)).reshape(-1, num_classes)


def pretrain_vision_tower(
    model,
    processor,
    *,
    steps: int,
    image_size: int = 224,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    data_seed: int = 123,
    eval_every: int = 100,
    eval_images: int = 128,
    kinds: tuple[str, ...] = FIRST_KINDS,
    decay_steps: int = 0,
    on_eval: Callable[[dict], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train ``model.model.visual`` (tower + merger) in place; returns the evaluation log, one row per evaluation:
    step, seconds, mean training loss since the last row, token ROC-AUC (corrupted vs clean) and per-class recall
    on a fixed held-out batch (each row also goes to ``on_eval`` as it is made).

    The learning rate is constant, then follows a cosine to 0 over the last ``decay_steps`` steps (0: constant
    throughout).

    ``image_size`` must be the size the processor keeps native (min_pixels = max_pixels = image_size**2), so each
    merged token covers exactly one cell of the class map."""
    from sklearn.metrics import roc_auc_score

    vision_config = model.config.vision_config
    cell = vision_config.patch_size * vision_config.spatial_merge_size
    if image_size % cell:
        raise ValueError(f"image_size {image_size} is not a multiple of the merged-token cell ({cell} px)")
    if decay_steps < 0:
        raise ValueError(f"decay_steps must be >= 0 (0: a constant learning rate), got {decay_steps}")
    vision = model.model.visual.train()
    names = ("clean", *kinds)
    head = torch.nn.Linear(model.config.text_config.hidden_size, len(names))
    optimizer = torch.optim.AdamW([*vision.parameters(), *head.parameters()], lr=learning_rate)
    scheduler = None
    if decay_steps > 0:
        from transformers import get_wsd_schedule

        decay = min(decay_steps, steps)
        scheduler = get_wsd_schedule(optimizer, num_warmup_steps=0, num_decay_steps=decay, num_training_steps=steps)
    rng = np.random.default_rng(data_seed)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, targets = [], []
        for _ in range(n):
            scene = make_scene(np.random.default_rng(rng.integers(1 << 62)))
            image, classes = corrupt_regions(render_scene(scene, image_size, rng), rng, kinds=kinds)
            images.append(image)
            targets.append(_cell_targets(classes, cell, len(names)))
        pixels = processor.image_processor(images=images, return_tensors="pt")
        grid = pixels["image_grid_thw"]
        if not bool((grid[:, 1:] * vision_config.patch_size == image_size).all()):
            raise ValueError(f"the processor resized {image_size}px images (grid {grid[0].tolist()}): set its pixel bounds")
        return pixels["pixel_values"], grid, torch.tensor(np.concatenate(targets), dtype=torch.float32)

    def token_logits(pixel_values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        out = vision(pixel_values, grid_thw=grid)
        return head(out if torch.is_tensor(out) else out.pooler_output)

    held_out = batch(eval_images)
    log: list[dict] = []
    losses: list[float] = []
    start = time.time()
    for step in range(1, steps + 1):
        pixel_values, grid, targets = batch(batch_size)
        loss = F.cross_entropy(token_logits(pixel_values, grid), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            vision.eval()
            with torch.no_grad():
                logits = token_logits(held_out[0], held_out[1])
            vision.train()
            truth = held_out[2].argmax(1)
            predicted = logits.argmax(1)
            recall = {
                name: round(float((predicted[truth == i] == i).float().mean()), 2) for i, name in enumerate(names)
            }
            corrupted = 1 - torch.softmax(logits, 1)[:, 0]
            row = {
                "step": step,
                "seconds": round(time.time() - start),
                "loss": round(float(np.mean(losses[-eval_every:])), 3),
                "token_auc": round(float(roc_auc_score((truth > 0).numpy(), corrupted.numpy())), 3),
                "recall": recall,
            }
            log.append(row)
            if on_eval is not None:
                on_eval(row)
        if on_step is not None:
            on_step(step)
    vision.eval()
    return log
