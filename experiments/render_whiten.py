"""Label-free init of the tiny vision tower's patch embedding: a random projection of ZCA-whitened patches, with
the whitening computed from clean rendered scenes (no defects, no labels)."""

import numpy as np
import torch

from vlm_judge.embedded.synthetic import make_scene, render_scene


def whitened_patch_embedding(model, processor, scenes: int, eps: float, seed: int = 4321, size: int = 224) -> None:
    rng = np.random.default_rng(seed)
    images = [render_scene(make_scene(np.random.default_rng(rng.integers(1 << 62))), size, rng) for _ in range(scenes)]
    px = processor.image_processor(images=images, return_tensors="pt")["pixel_values"].double()
    x = px - px.mean(0)
    cov = x.T @ x / len(x)
    vals, vecs = torch.linalg.eigh(cov)
    keep = vals > vals.max() * 1e-9  # the two temporal frames are copies: half the directions are empty
    whiten = vecs[:, keep] / torch.sqrt(vals[keep] + eps * vals[keep].mean())
    proj = model.model.visual.patch_embed.proj
    out = proj.weight.shape[0]
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(int(keep.sum()), out, generator=g, dtype=torch.float64) / keep.sum() ** 0.5
    weight = (whiten @ rand).T  # (out, 1176)
    z = x.float() @ weight.float().T
    print(f"whitened patch embedding from {len(x)} patches: kept {int(keep.sum())} directions, output std {z.std():.2f}")
    with torch.no_grad():
        proj.weight.copy_(weight.reshape(proj.weight.shape).to(proj.weight.dtype))


def init_weights(model, processor, gain: float, whiten: int, eps: float) -> None:
    """The probes' re-initialisation: fan-in init (vision tower + LM layers) at ``gain``, then the whitened patch
    embedding from ``whiten`` clean scenes (0: off)."""
    from vlm_judge.embedded.tiny_model import fan_in_init

    if gain:
        fan_in_init(model, gain)
    if whiten:
        whitened_patch_embedding(model, processor, whiten, eps)
