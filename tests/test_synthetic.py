"""The synthetic assessor logs: loadable like real logs, per-system defect rates, determinism, native size."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vlm_judge.data import load_assessor_logs, load_judge_dataset
from vlm_judge.data.synthetic import (
    DEFECT_TYPES,
    SyntheticConfig,
    applicable_defects,
    generate_synthetic_dataset,
    make_scene,
    render_generation,
)
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
