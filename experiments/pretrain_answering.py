"""Experiment (run 47 of LOG.md, not kept): a second label-free stage after the committed base, in which the whole
tiny Qwen2-VL (vision tower, merger, language model) learns to answer Yes/No to "is some part of this picture
corrupted?" on twins (a clean scene next to a copy with 1-2 generic corruptions), with the judge's two-way loss plus
the answer mass. Run 48 fine-tuned the judge from its step 1000: test ROC-AUC 0.757 vs 0.777 without it.

    PYTHONPATH=. python experiments/pretrain_answering.py vlm_judge/embedded/assets/tiny-base-224 models/s2 1000 1000
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from vlm_judge.embedded.pretrain import corrupt_regions
from vlm_judge.embedded.synthetic import make_scene, render_scene
from vlm_judge.modeling import build_judge_inputs
from vlm_judge.protocol import JudgePrompt, answer_token_ids
from vlm_judge.training.trainer import answer_loss_terms

QUESTION = JudgePrompt(
    version="pretrain-corruption-v1",
    system="You look closely at pictures.",
    user="Is some part of this picture corrupted, for example noisy, blurred, blocky, posterised or shifted? "
    "Answer Yes or No.",
)


def pretrain_answering(
    model,
    processor,
    *,
    steps: int,
    image_size: int = 224,
    batch_size: int = 16,
    learning_rate: float = 5e-4,
    data_seed: int = 321,
    eval_every: int = 100,
    eval_images: int = 128,
    question: JudgePrompt = QUESTION,
    on_eval: Callable[[dict], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train every weight of ``model`` in place on "is some part corrupted?" (Yes/No at the answer position, the
    judge's two-way loss plus the answer mass); returns the evaluation log, one row per evaluation: step, seconds,
    mean training loss since the last row and the image-level ROC-AUC of P(Yes) on a fixed held-out set of twins."""
    from sklearn.metrics import roc_auc_score

    if batch_size % 2 or eval_images % 2:
        raise ValueError("batch_size and eval_images must be even (clean/corrupted twins)")
    defect_ids, clean_ids = answer_token_ids(processor.tokenizer, question)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    rng = np.random.default_rng(data_seed)

    def batch(n: int) -> tuple[dict, torch.Tensor]:
        images, labels = [], []
        for _ in range(n // 2):
            scene = make_scene(np.random.default_rng(rng.integers(1 << 62)))
            clean = render_scene(scene, image_size, rng)
            corrupted, _ = corrupt_regions(clean, rng, min_regions=1)
            images += [clean, corrupted]
            labels += [0.0, 1.0]
        inputs = build_judge_inputs(processor, images, question)
        side = inputs["image_grid_thw"][:, 1:] * model.config.vision_config.patch_size
        if not bool((side == image_size).all()):
            raise ValueError(
                f"the processor resized {image_size}px images: set its pixel bounds to {image_size}^2"
            )
        return inputs, torch.tensor(labels)

    def answer_terms(inputs: dict, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = model(**inputs, logits_to_keep=1).logits[:, -1]
        return answer_loss_terms(logits, labels, defect_ids, clean_ids)

    held_out = batch(eval_images)
    log: list[dict] = []
    losses: list[float] = []
    start = time.time()
    for step in range(1, steps + 1):
        inputs, labels = batch(batch_size)
        pair_ce, neg_mass, _ = answer_terms(inputs, labels)
        loss = (pair_ce + neg_mass).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                _, _, log_odds = answer_terms(*held_out)
                p_yes = torch.sigmoid(log_odds)
            model.train()
            row = {
                "step": step,
                "seconds": round(time.time() - start),
                "loss": round(float(np.mean(losses[-eval_every:])), 3),
                "answer_auc": round(float(roc_auc_score(held_out[1].numpy(), p_yes.numpy())), 3),
            }
            log.append(row)
            if on_eval is not None:
                on_eval(row)
        if on_step is not None:
            on_step(step)
    model.eval()
    return log


if __name__ == "__main__":
    import json
    import shutil
    import sys
    from pathlib import Path

    from vlm_judge.modeling import load_model, load_processor

    base, out, steps, save_every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    lr = float(sys.argv[5]) if len(sys.argv) > 5 else 5e-4
    torch.set_num_threads(2)
    torch.manual_seed(0)
    processor = load_processor(base, min_pixels=224 * 224, max_pixels=224 * 224)
    model = load_model(base, dtype="float32")
    rows = []

    def save(step):
        folder = Path(f"{out}-step{step}")
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        shutil.copy(Path(base) / "tiny_model_spec.json", folder)
        (folder / "stage2.json").write_text(json.dumps({"base": base, "lr": lr, "log": rows}, indent=1))

    def on_eval(row):
        rows.append(row)
        print(json.dumps(row), flush=True)

    def on_step(step):
        if step % save_every == 0:
            save(step)
            model.train()

    pretrain_answering(model, processor, steps=steps, learning_rate=lr, on_eval=on_eval, on_step=on_step)
