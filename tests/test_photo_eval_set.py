"""scripts/make_photo_eval_set.py: real photos with albumentations defects, in the canonical format, guard-clean,
defects confined to their region and visible there, the same seed giving the same files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from vlm_judge.data import load_assessor_logs

REPO = Path(__file__).resolve().parents[1]
SIZE = 96


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_photo_eval_set", REPO / "scripts" / "make_photo_eval_set.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(out: Path, seed: int) -> Path:
    args = ["--output_dir", str(out), "--size", str(SIZE), "--per_photo", "1", "--seed", str(seed)]
    assert _script().main(args) == 0
    return out


def _pixels(root: Path, image: str) -> np.ndarray:
    return np.asarray(Image.open(root / image).convert("RGB")).astype(np.int16)


def test_photo_eval_set(tmp_path):
    from vlm_judge.embedded import photos as module  # the set's sources and defect types
    root = _build(tmp_path / "a", seed=3)
    n_pairs = len(module.PHOTOS)

    frame, report = load_assessor_logs(root, min_side=SIZE)
    assert report.excluded == [], report.summary()
    assert len(frame) == 2 * n_pairs
    assert set(frame["split"]) == {"test"}
    assert set(frame["system"]) == {"photo-clean", "photo-defect"}
    assert set(frame["defect"]) == {"none", *module.DEFECTS}  # 9 pairs cover all 5 types (balanced cycle)
    assert (frame["label"] == (frame["system"] == "photo-defect").astype(int)).all()
    assert ((frame["defect"] == "none") == (frame["label"] == 0)).all()

    table = pd.read_csv(root / "labels.csv", dtype=str)
    assert list(table.columns[:6]) == ["image", "prompt_id", "system", "label", "defect", "split"]
    for prompt_id, pair in table.groupby("prompt_id"):
        assert len(pair) == 2, prompt_id
        clean_row = pair[pair["system"] == "photo-clean"].iloc[0]
        defect_row = pair[pair["system"] == "photo-defect"].iloc[0]
        clean, damaged = _pixels(root, clean_row["image"]), _pixels(root, defect_row["image"])
        assert clean.shape == damaged.shape == (SIZE, SIZE, 3)

        x0, y0, x1, y1 = map(int, defect_row["region"].split())
        side = x1 - x0
        assert y1 - y0 == side and 0.25 * SIZE - 1 <= side <= 0.45 * SIZE + 1, (prompt_id, side)
        inside = np.zeros((SIZE, SIZE), bool)
        inside[y0:y1, x0:x1] = True
        assert (clean[~inside] == damaged[~inside]).all(), f"{prompt_id}: pixels changed outside the region"
        diff = float(np.abs(clean - damaged)[inside].mean())
        assert diff > 4.0, f"{prompt_id} ({defect_row['defect']}): region barely changed ({diff:.1f})"

    # The same seed gives byte-identical files; another seed gives other crops.
    again = _build(tmp_path / "b", seed=3)
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file())
    for name in names:
        assert (root / name).read_bytes() == (again / name).read_bytes(), name
    other = _build(tmp_path / "c", seed=4)
    assert (root / "labels.csv").read_bytes() != (other / "labels.csv").read_bytes()


def test_a_foreign_folder_is_refused_with_a_message(tmp_path):
    import subprocess
    import sys

    (tmp_path / "notes.txt").write_text("someone else's")
    script = Path(__file__).resolve().parent.parent / "scripts" / "make_photo_eval_set.py"
    result = subprocess.run(
        [sys.executable, str(script), "--output_dir", str(tmp_path), "--per_photo", "1", "--size", "96"],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "is not empty and was not made by scripts/make_photo_eval_set.py" in result.stderr
    assert "Traceback" not in result.stderr and (tmp_path / "notes.txt").exists()
