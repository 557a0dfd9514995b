"""The tiny base's label-free vision pretraining (vlm_judge.embedded.pretrain) and the committed base the CPU recipe uses."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vlm_judge.embedded.pretrain import (
    CLASSES,
    CORRUPTIONS,
    corrupt_regions,
    pretrain_vision_tower,
)
from vlm_judge.embedded.pretrain.vision import _cell_targets
from vlm_judge.embedded.tiny_model import TinyModelSpec, make_tiny_model
from vlm_judge.images import file_sha256
from vlm_judge.modeling import load_model, load_processor

REPO = Path(__file__).resolve().parents[1]
SIDE = 112  # 4 x 4 merged tokens: the smallest size that keeps every corruption region inside cells


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    spec = TinyModelSpec(min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE, init_gain=1.0)
    return make_tiny_model(tmp_path_factory.mktemp("tiny-112"), spec)


def test_corruptions_give_a_class_map_that_matches_the_changed_pixels():
    from PIL import Image

    rng = np.random.default_rng(5)
    clean = Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8))
    for seed in range(6):
        image, classes = corrupt_regions(clean, np.random.default_rng(seed), max_regions=2)
        changed = np.abs(np.asarray(image, np.int16) - np.asarray(clean, np.int16)).max(axis=2) > 0
        assert classes.shape == (SIDE, SIDE) and classes.max() < len(CLASSES)
        assert not changed[classes == 0].any()  # pixels outside every region are untouched
    targets = _cell_targets(classes, 28)
    assert targets.shape == (16, len(CLASSES))
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)


def test_pretraining_moves_only_the_vision_side(small_model_dir):
    torch.manual_seed(0)
    processor = load_processor(str(small_model_dir), min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE)
    model = load_model(str(small_model_dir), dtype="float32")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    rows = []
    log = pretrain_vision_tower(
        model, processor, steps=4, image_size=SIDE, batch_size=2, eval_every=2, eval_images=12, on_eval=rows.append
    )
    assert [row["step"] for row in log] == [2, 4] and rows == log
    assert 0.0 <= log[-1]["token_auc"] <= 1.0 and set(log[-1]["recall"]) == set(CLASSES)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert "model.visual.patch_embed.proj.weight" in changed and any(".merger." in n for n in changed)
    assert all(name.startswith("model.visual.") for name in changed)  # the language model is not touched


def _patch_embed_moves(model_dir, processor, decay_steps: int) -> list[float]:
    """The largest change of the patch embedding at each of 3 pretraining steps."""
    torch.manual_seed(0)
    model = load_model(str(model_dir), dtype="float32")
    weights = model.model.visual.patch_embed.proj.weight
    snapshots = [weights.detach().clone()]
    pretrain_vision_tower(
        model, processor, steps=3, image_size=SIDE, batch_size=2, eval_every=3, eval_images=4,
        decay_steps=decay_steps, on_step=lambda step: snapshots.append(weights.detach().clone()),
    )
    return [float((b - a).abs().max()) for a, b in pairwise(snapshots)]


def test_pretraining_decays_the_learning_rate_over_the_last_steps(small_model_dir):
    processor = load_processor(str(small_model_dir), min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE)
    constant, decayed = (_patch_embed_moves(small_model_dir, processor, n) for n in (0, 2))
    # Adam moves each weight by at most ~lr per step: 1e-3 throughout, or 1e-3, 1e-3, then half-way down the cosine.
    assert constant[0] == pytest.approx(1e-3, rel=0.02) and decayed[0] == pytest.approx(1e-3, rel=0.02)
    assert decayed[1] == pytest.approx(constant[1], rel=1e-4)  # same data, same lr until the decay starts
    assert decayed[2] < 0.6 * constant[2]


def test_pretraining_refuses_an_image_size_the_processor_would_resize(small_model_dir):
    processor = load_processor(str(small_model_dir), min_pixels=SIDE * SIDE, max_pixels=SIDE * SIDE)
    model = load_model(str(small_model_dir), dtype="float32")
    with pytest.raises(ValueError, match="resized 224px images"):
        pretrain_vision_tower(model, processor, steps=1, image_size=224, eval_images=2)
    with pytest.raises(ValueError, match="not a multiple of the merged-token cell"):
        pretrain_vision_tower(model, processor, steps=1, image_size=100, eval_images=2)
    with pytest.raises(ValueError, match="decay_steps must be >= 0 .*got -5"):
        pretrain_vision_tower(model, processor, steps=1, image_size=SIDE, eval_images=2, decay_steps=-5)


def test_the_recipe_base_is_the_committed_pretrained_tiny_model(tmp_path):
    from vlm_judge.embedded import tiny_model_dir

    recipe = yaml.safe_load((REPO / "recipes/tiny-cpu.yaml").read_text())
    base = REPO / recipe["model_name_or_path"]
    assert tiny_model_dir(recipe["tiny_model"], str(base)) == base  # the recipe's architecture
    record = json.loads((base / "pretraining.json").read_text())
    assert record["model_sha256"] == file_sha256(base / "model.safetensors")
    trained = record
    while "log" not in trained:  # a reshaping stage (more ViT blocks, fewer LM layers) trains nothing
        trained = trained["base"]
    assert trained["log"][-1]["token_auc"] > 0.75  # it learned the corruptions (0.5 = chance)

    random_init = load_model(str(tiny_model_dir(recipe["tiny_model"], str(tmp_path / "random"))), dtype="float32")
    pretrained = load_model(str(base), dtype="float32").state_dict()
    same = {n for n, p in pretrained.items() if torch.equal(p, random_init.state_dict()[n])}
    assert not any(n.startswith("model.visual.") for n in same)  # every vision weight was trained
    # The LM was not: it is the random init of the spec the chain of stages started from (a later stage may grow
    # the tower or cut LM layers, which changes how a fresh init of the recipe's spec draws its weights).
    first = record
    while first.get("base"):
        first = first["base"]
    start = load_model(str(tiny_model_dir(first["recipe_tiny_model"], str(tmp_path / "start"))), dtype="float32")
    language_model = [n for n in pretrained if not n.startswith("model.visual.")]
    assert language_model and all(torch.equal(pretrained[n], start.state_dict()[n]) for n in language_model)


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_each_corruption_kind_changes_its_region_only(kind):
    from PIL import Image

    rng = np.random.default_rng(11)
    clean = Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8))
    image, classes = corrupt_regions(clean, np.random.default_rng(1), kinds=(kind,), min_regions=1, max_regions=1)
    changed = np.abs(np.asarray(image, np.int16) - np.asarray(clean, np.int16)).max(axis=2) > 0
    assert set(np.unique(classes)) == {0, 1}
    assert changed[classes == 1].mean() > 0.5 and not changed[classes == 0].any()


def test_an_unknown_corruption_kind_is_refused():
    from PIL import Image

    with pytest.raises(ValueError, match="subset of .*'noise'.*got \\('smudge',\\)"):
        corrupt_regions(Image.new("RGB", (SIDE, SIDE)), np.random.default_rng(0), kinds=("smudge",))
