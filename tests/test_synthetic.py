"""The synthetic assessor logs: loadable like real logs, per-system defect rates, determinism, native size,
the golden output, the defect registry."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlm_judge.data import load_assessor_logs, load_judge_dataset
from vlm_judge.embedded.synthetic import (
    DEFECT_TYPES,
    DEFECTS,
    DETECTION,
    SyntheticConfig,
    applicable_defects,
    assessor_votes,
    generate_synthetic_dataset,
    image_defect,
    make_scene,
    render_generation,
)
from vlm_judge.embedded.synthetic.defects import DefectType, ImageDefect
from vlm_judge.images import load_image

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"num_prompts": 10, "num_systems": 3, "image_size": 128, "seed": 7}


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic_dataset(out, **SMALL)
    return out


def digest_folder(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.png"))
    }


def test_loads_through_the_same_loader_as_real_logs(small_dataset: Path) -> None:
    frame, report = load_assessor_logs(small_dataset, min_side=128)
    assert report.kept == 30 and not report.excluded  # no duplicates, nothing undecodable
    assert set(frame["system"]) == {"gen-v1", "gen-v2", "gen-v3"}
    assert (frame.groupby("prompt_id")["split"].nunique() == 1).all()  # split written by prompt
    assert frame["label"].tolist() == (frame["soft_label"] >= 0.5).astype(int).tolist()
    assert set(frame["defect"]) <= {"none", *DEFECT_TYPES}
    # Noisy assessors, but the majority agrees with the injected ground truth almost always.
    agreement = (frame["label"] == (frame["defect"] != "none")).mean()
    assert agreement >= 0.9
    ds = load_judge_dataset(small_dataset, min_side=128)
    assert sum(len(part) for part in ds.values()) == 30
    prompts = [set(part["prompt_id"]) for part in ds.values()]
    assert all(a.isdisjoint(b) for i, a in enumerate(prompts) for b in prompts[i + 1 :])
    assert ds["train"][0]["image"].size == (128, 128)


def test_defect_rates_differ_per_system(small_dataset: Path) -> None:
    frame, _ = load_assessor_logs(small_dataset, min_side=128)
    rates = frame.assign(defective=frame["defect"] != "none").groupby("system")["defective"].mean()
    # Exactly round(rate * num_prompts) defective images per system, rates spread 0.15 -> 0.7.
    assert rates.tolist() == pytest.approx([0.2, 0.4, 0.7])
    config = SyntheticConfig(num_systems=4)
    assert config.system_rates() == pytest.approx([0.15, 0.15 + 0.55 / 3, 0.15 + 1.1 / 3, 0.7])


def test_deterministic_for_a_seed(small_dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_synthetic_dataset(again, **SMALL)
    assert (again / "labels.csv").read_bytes() == (small_dataset / "labels.csv").read_bytes()
    assert digest_folder(again) == digest_folder(small_dataset)
    other = tmp_path / "other"
    generate_synthetic_dataset(other, **{**SMALL, "seed": 8})
    assert (other / "labels.csv").read_bytes() != (small_dataset / "labels.csv").read_bytes()


def test_generated_image_is_exactly_1024(tmp_path: Path) -> None:
    generate_synthetic_dataset(tmp_path / "big", num_prompts=1, num_systems=1, defect_rates=(1.0, 1.0))
    [png] = (tmp_path / "big" / "images").glob("*.png")
    loaded = load_image(png)
    assert loaded.format == "PNG" and loaded.image.size == (1024, 1024)


def _scene_with_everything() -> object:
    for seed in range(100):
        scene = make_scene(np.random.default_rng(seed))
        if len(applicable_defects(scene)) == len(DEFECT_TYPES):
            return scene
    raise AssertionError("no scene with both a grid and text in 100 seeds")


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_each_defect_is_large_and_visible(defect: str) -> None:
    # Same scene, same jitter: the defect alone must change a region of at least ~20 % of the side, strongly.
    size = 256
    scene = _scene_with_everything()
    clean = np.asarray(render_generation(scene, size, np.random.default_rng(1)), dtype=np.int16)
    broken = render_generation(scene, size, np.random.default_rng(1), defect, np.random.default_rng(2))
    assert broken.size == (size, size) and broken.mode == "RGB"
    diff = np.abs(np.asarray(broken, dtype=np.int16) - clean).max(axis=2)
    changed = diff > 24
    ys, xs = np.nonzero(changed)
    assert changed.mean() > 0.01, f"{defect}: only {changed.mean():.4f} of pixels changed"
    extent = max(xs.max() - xs.min(), ys.max() - ys.min()) / size
    assert extent >= 0.2, f"{defect}: changed region spans only {extent:.2f} of the side"


@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_a_defect_on_the_clean_render_is_the_same_image(defect: str) -> None:
    # The training stream hands the clean twin to render_generation so that an image-space defect edits it
    # instead of rendering the scene again; the image must not change by that.
    size = 128
    scene = _scene_with_everything()
    clean = render_generation(scene, size, np.random.default_rng(1))
    rendered = render_generation(scene, size, np.random.default_rng(1), defect, np.random.default_rng(2))
    reused = render_generation(
        scene, size, np.random.default_rng(1), defect, np.random.default_rng(2), clean=clean.copy()
    )
    assert np.array_equal(np.asarray(reused), np.asarray(rendered))
    assert not np.array_equal(np.asarray(reused), np.asarray(clean))
    # and the clean render is really what an image-space defect edits (render-time defects draw their own)
    other = Image.fromarray(np.random.default_rng(3).integers(0, 256, (size, size, 3), dtype=np.uint8))
    on_other = render_generation(
        scene, size, np.random.default_rng(1), defect, np.random.default_rng(2), clean=other
    )
    edits_the_render = isinstance(DEFECTS[defect].apply, ImageDefect)
    assert edits_the_render == (defect not in ("broken_grid", "garbled_text"))
    assert np.array_equal(np.asarray(on_other), np.asarray(rendered)) != edits_the_render
    with pytest.raises(ValueError, match=r"clean must be this scene's 128x128 clean render, got a \(64, 64\)"):
        render_generation(scene, size, np.random.default_rng(1), defect, np.random.default_rng(2), clean=clean.resize((64, 64)))


def test_refuses_foreign_folder_and_replaces_its_own(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("someone else's data")
    with pytest.raises(FileExistsError, match="not made by"):
        generate_synthetic_dataset(tmp_path, num_prompts=1, image_size=64)
    out = tmp_path / "syn"
    generate_synthetic_dataset(out, num_prompts=3, num_systems=2, image_size=64)
    generate_synthetic_dataset(out, num_prompts=1, num_systems=2, image_size=64)
    assert len(list((out / "images").glob("*.png"))) == 2  # no stale images from the bigger run


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = [
        "--output_dir",
        str(out),
        "--num_prompts",
        "3",
        "--num_systems",
        "2",
        "--seed",
        "1",
        "--image_size",
        "64",
    ]
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_synthetic_data.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 6 images" in result.stdout
    frame, report = load_assessor_logs(out, min_side=64)
    assert len(frame) == 6 and not report.excluded
    assert (out / "meta.json").is_file() and (out / "README.md").is_file()


# The built-in seven, spelled out so that adding a type to the registry does not move the golden config.
SEVEN = ("smear", "seam", "warp", "noise_burst", "banding", "broken_grid", "garbled_text")
GOLDEN = {
    "num_prompts": 12,
    "num_systems": 2,
    "image_size": 96,
    "seed": 0,
    "defect_rates": (0.5, 1.0),
    "defect_types": SEVEN,
}
# Computed with the single-module generator before it became a package (GENERATOR_VERSION 1). A change here
# means the generator's output changed: intended only with a GENERATOR_VERSION bump.
GOLDEN_LABELS_SHA256 = "27bbba0eed79a9528238588f3d3a9d7437d13d5eee54ba88b4727c6936c4693d"
GOLDEN_IMAGES_SHA256 = "571453d6d68acf57a6b99af9484b7f3a012048970b75364ae80e78fecae62346"


def images_digest(root: Path) -> str:
    """sha256 over (name, shape, sha256 of the decoded RGB pixels) of every image: exact, yet independent of
    the PNG encoder's zlib build."""
    digest = hashlib.sha256()
    for path in sorted((root / "images").glob("*.png")):
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        digest.update(f"{path.name}:{pixels.shape}:{hashlib.sha256(pixels.tobytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


def test_golden_output(tmp_path: Path) -> None:
    table = generate_synthetic_dataset(tmp_path / "golden", **GOLDEN)
    assert set(table["defect"]) == {"none", *SEVEN}  # the config exercises every built-in defect
    assert (
        hashlib.sha256((tmp_path / "golden" / "labels.csv").read_bytes()).hexdigest() == GOLDEN_LABELS_SHA256
    )
    assert images_digest(tmp_path / "golden") == GOLDEN_IMAGES_SHA256


def test_registry_is_the_single_source() -> None:
    assert DEFECT_TYPES == tuple(DEFECTS) == SEVEN
    assert {name: d.detection for name, d in DEFECTS.items()} == DETECTION
    assert SyntheticConfig().defect_types == DEFECT_TYPES
    with pytest.raises(ValueError, match="subset of"):
        SyntheticConfig(defect_types=("smear", "sparkle"))
    for seed in range(20):
        scene = make_scene(np.random.default_rng(seed))
        expected = {"broken_grid": scene.grid is not None, "garbled_text": scene.text is not None}
        assert applicable_defects(scene) == [d for d in SEVEN if expected.get(d, True)]
        # Scene-independent types keep the caller's order, scene-dependent ones follow in registry order.
        mixed = applicable_defects(scene, ("garbled_text", "seam", "broken_grid", "smear"))
        assert mixed == ["seam", "smear"] + [d for d in ("broken_grid", "garbled_text") if expected[d]]


def _all_defective(out: Path, **options):
    """Small logs (2 systems, 64 px) in which every image gets a defect."""
    return generate_synthetic_dataset(out, num_systems=2, image_size=64, defect_rates=(1.0, 1.0), **options)


def _invert(arr: np.ndarray, box, rng: np.random.Generator, strength: float, scene) -> None:
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = 255 - arr[y0:y1, x0:x1]


def test_a_new_defect_type_is_one_registry_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DEFECTS, "invert", DefectType("invert", 1.0, image_defect(_invert)))
    table = _all_defective(tmp_path / "inv", num_prompts=4, defect_types=("invert",))
    assert set(table["defect"]) == {"invert"} and (table["defect_votes"] == table["total_votes"]).all()
    config = SyntheticConfig(votes=9, defect_types=("invert",))
    assert assessor_votes(config, 0, 0, "invert") == 9


def test_large_defect_area_with_broken_grid(tmp_path: Path) -> None:
    # Regression: a region wider than ~1.5x the grid used to raise ValueError (uniform with low > high).
    size = 128
    scenes = [
        s for s in (make_scene(np.random.default_rng(seed)) for seed in range(30)) if s.grid is not None
    ]
    for scene in scenes[:6]:
        clean = np.asarray(render_generation(scene, size, np.random.default_rng(1)), dtype=np.int16)
        broken = render_generation(
            scene, size, np.random.default_rng(1), "broken_grid", np.random.default_rng(2), area=(0.85, 0.9)
        )
        changed = np.abs(np.asarray(broken, dtype=np.int16) - clean).max(axis=2) > 24
        ys, xs = np.nonzero(changed)
        assert changed.any()
        # The region is centred on the grid, so the damage lies within the grid's extent.
        g = scene.grid
        assert g.x0 - 0.1 <= xs.mean() / size <= g.x1 + 0.1 and g.y0 - 0.1 <= ys.mean() / size <= g.y1 + 0.1
    table = _all_defective(
        tmp_path / "wide", num_prompts=8, defect_area=(0.6, 0.9), defect_types=("broken_grid", "garbled_text")
    )
    assert len(table) == 16 and "none" not in set(table["defect"])


@pytest.mark.parametrize("only", ["broken_grid", "garbled_text"])
def test_only_scene_dependent_defects(tmp_path: Path, only: str) -> None:
    # Regression: defect_types=(only,) used to raise KeyError on a scene without a grid / text. A prompt whose
    # scene cannot show the defect and has a planned defect is drawn again, so every plan is kept exactly.
    kwargs = {"num_prompts": 12, "num_systems": 3, "image_size": 64, "seed": 6, "defect_types": (only,)}
    first = [make_scene(np.random.default_rng([6, 0, p])) for p in range(12)]  # each prompt's first draw
    lacking = [s for s in first if (s.grid if only == "broken_grid" else s.text) is None]
    assert lacking  # seed 6 does exercise the redraw
    noun = "grid of" if only == "broken_grid" else "lines of"

    table = generate_synthetic_dataset(tmp_path / "only", defect_rates=(0.5, 1.0), **kwargs)
    per_system = table.assign(d=table["defect"] != "none").groupby("system")["d"].sum().tolist()
    assert per_system == [6, 9, 12]  # round(rate * 12), rates 0.5, 0.75, 1.0
    assert set(table["defect"]) == {"none", only}
    assert all(
        noun in prompt for prompt in table["prompt"]
    )  # every prompt has a defect here: grid/text drawn

    # Prompts without a planned defect keep their first scene: nothing changes where nothing crashed before.
    clean = generate_synthetic_dataset(tmp_path / "clean", defect_rates=(0.0, 0.0), **kwargs)
    assert clean.drop_duplicates("prompt_id").sort_values("prompt_id")["prompt"].tolist() == [
        s.prompt for s in first
    ]
    with pytest.raises(ValueError, match="does not apply"):
        render_generation(lacking[0], 64, np.random.default_rng(0), only, np.random.default_rng(1))
