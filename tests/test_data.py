"""The assessor-log data layer: format, quality guard, splits, HF dataset, fingerprint (small images, fast)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vlm_judge.data import (
    DATASET_COLUMNS,
    DataFormatError,
    dataset_fingerprint,
    load_assessor_logs,
    load_judge_dataset,
    split_by_prompt,
)

SIDE = 64  # test images; the guard's min_side is lowered to match


def png_bytes(seed: int, size: tuple[int, int] = (SIDE, SIDE)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(root: Path, count: int, start: int = 0) -> list[str]:
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + count):
        name = f"images/img{i:03d}.png"
        (root / name).write_bytes(png_bytes(i))
        names.append(name)
    return names


def write_table(root: Path, rows: list[dict], fmt: str = "csv") -> Path:
    for old in root.glob("labels.*"):
        old.unlink()
    frame = pd.DataFrame(rows)
    path = root / f"labels.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        frame.to_parquet(path, index=False)
    return path


def load(root: Path, **kwargs):
    kwargs.setdefault("min_side", SIDE)
    return load_assessor_logs(root, **kwargs)


@pytest.fixture
def good_rows(tmp_path: Path) -> list[dict]:
    names = write_images(tmp_path, 6)
    votes = [(0, 5), (2, 5), (3, 5), (5, 5), (2, 4), (1, 3)]
    return [
        {
            "image": name,
            "prompt_id": i // 2,  # numbers in jsonl/parquet, text in csv: must normalise to the same
            "system": f"gen-v{i % 2 + 1}",
            "defect_votes": dv,
            "total_votes": tv,
            "prompt": f"scene {i // 2}, with a comma",
        }
        for i, (name, (dv, tv)) in enumerate(zip(names, votes, strict=True))
    ]


# ------------------------------------------------------------------------------------------------ format
def test_csv_jsonl_parquet_load_identically(tmp_path: Path, good_rows: list[dict]) -> None:
    frames = {}
    for fmt in ("csv", "jsonl", "parquet"):
        write_table(tmp_path, good_rows, fmt)
        frames[fmt], report = load(tmp_path)
        assert report.kept == 6 and not report.excluded
    pd.testing.assert_frame_equal(frames["csv"], frames["jsonl"])
    pd.testing.assert_frame_equal(frames["csv"], frames["parquet"])
    frame = frames["csv"]
    assert list(frame["prompt_id"]) == ["0", "0", "1", "1", "2", "2"]
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["image_path"])
    assert frame["prompt"].iloc[0] == "scene 0, with a comma"
    assert set(frame["defect"]) == {""}  # optional column absent -> empty text


def test_soft_labels_from_votes(tmp_path: Path, good_rows: list[dict]) -> None:
    write_table(tmp_path, good_rows)
    frame, _ = load(tmp_path)
    assert frame["soft_label"].tolist() == pytest.approx([0.0, 0.4, 0.6, 1.0, 0.5, 1 / 3])
    assert frame["label"].tolist() == [0, 0, 1, 1, 1, 0]  # hard = soft >= 0.5 (a tie is defective)
    assert frame["label"].dtype == np.int64 and frame["soft_label"].dtype == np.float64


def test_hard_labels_only_and_label_beside_votes(tmp_path: Path) -> None:
    names = write_images(tmp_path, 3)
    rows = [
        {"image": n, "prompt_id": i, "system": "a", "label": lab}
        for i, (n, lab) in enumerate(zip(names, [1, 0, 1], strict=True))
    ]
    write_table(tmp_path, rows)
    frame, _ = load(tmp_path)
    assert frame["label"].tolist() == [1, 0, 1]
    assert frame["soft_label"].tolist() == [1.0, 0.0, 1.0]
    # With both: the label column is the hard label, the votes give the soft label.
    rows = [dict(r, defect_votes=2, total_votes=5) for r in rows]
    write_table(tmp_path, rows, "jsonl")
    frame, _ = load(tmp_path)
    assert frame["label"].tolist() == [1, 0, 1]
    assert frame["soft_label"].tolist() == pytest.approx([0.4, 0.4, 0.4])


@pytest.mark.parametrize(
    ("drop", "named"),
    [("image", "image"), ("prompt_id", "prompt_id"), ("system", "system"), ("total_votes", "total_votes")],
)
def test_missing_column_is_a_format_error_naming_file_and_column(
    tmp_path: Path, good_rows: list[dict], drop: str, named: str
) -> None:
    path = write_table(tmp_path, [{k: v for k, v in r.items() if k != drop} for r in good_rows])
    with pytest.raises(DataFormatError) as err:
        load(tmp_path)
    assert (
        str(path) in str(err.value)
        and named in str(err.value)
        and "missing required column" in str(err.value)
    )


def test_no_label_columns_is_a_format_error(tmp_path: Path, good_rows: list[dict]) -> None:
    write_table(tmp_path, [{k: v for k, v in r.items() if "votes" not in k} for r in good_rows], "parquet")
    with pytest.raises(DataFormatError, match=r"labels\.parquet.*label \(or defect_votes \+ total_votes\)"):
        load(tmp_path)


def test_table_level_errors(tmp_path: Path, good_rows: list[dict]) -> None:
    with pytest.raises(DataFormatError, match="no label table"):
        load(tmp_path)
    write_table(tmp_path, good_rows)
    (tmp_path / "labels.jsonl").write_text("{}\n")
    with pytest.raises(DataFormatError, match="several label tables"):
        load(tmp_path)
    (tmp_path / "labels.csv").unlink()
    (tmp_path / "labels.jsonl").write_text('{"image": "a.png"}\nnot json\n')
    with pytest.raises(DataFormatError, match=r"labels\.jsonl: line 2 is not valid JSON"):
        load(tmp_path)
    with pytest.raises(DataFormatError, match="does not exist"):
        load(tmp_path / "nowhere")


def test_table_file_path_is_accepted(tmp_path: Path, good_rows: list[dict]) -> None:
    path = write_table(tmp_path, good_rows)
    frame, report = load(path)
    assert len(frame) == 6 and report.source == str(path)


# ------------------------------------------------------------------------------------------------- guard
def test_guard_excludes_every_bad_row_with_its_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = write_images(tmp_path, 3)
    img = tmp_path / "images"
    raw = png_bytes(100)
    idat = raw.index(b"IDAT")
    (img / "corrupt.png").write_bytes(
        raw[: idat + 20] + bytes(b ^ 0xFF for b in raw[idat + 20 : idat + 200]) + raw[idat + 200 :]
    )
    (img / "truncated.png").write_bytes(raw[: len(raw) // 2])
    (img / "notes.png").write_bytes(b"this is a text file, renamed\n")
    (img / "tiny.png").write_bytes(png_bytes(101, (10, 10)))
    (img / "empty.png").write_bytes(b"")
    Image.open(tmp_path / good[0]).save(img / "same_pixels.png", compress_level=9)  # other bytes, same pixels

    def row(image: str, prompt: object = "p", **kw: object) -> dict:
        return {
            "image": image,
            "prompt_id": prompt,
            "system": "gen-v1",
            "defect_votes": 1,
            "total_votes": 5,
            **kw,
        }

    rows = [
        row(good[0]),  # 1 kept
        row("images/corrupt.png"),  # 2
        row("images/truncated.png"),  # 3
        row("images/notes.png"),  # 4
        row("images/tiny.png"),  # 5
        row("images/same_pixels.png"),  # 6
        row(good[0]),  # 7 same path again
        row(good[1], defect_votes=6),  # 8
        row(good[1], defect_votes=-1),  # 9
        row(good[1], total_votes=0, defect_votes=0),  # 10
        row(good[1], defect_votes="many"),  # 11
        row(good[1], defect_votes=2.5),  # 12
        row(good[1], prompt=""),  # 13
        row(good[1], defect_votes=""),  # 14
        row("images/missing.png"),  # 15
        row("images/empty.png"),  # 16
        row(good[1], label="yes"),  # 17
        row(good[1]),  # 18 kept (earlier rows with this path were excluded before the path check)
        row(good[2], label=1),  # 19 kept
        row("images"),  # 20 a directory
    ]
    write_table(tmp_path, rows)
    with caplog.at_level(logging.INFO, logger="vlm_judge.data"):
        frame, report = load(tmp_path)

    expected = {
        2: ("undecodable", "cannot be decoded"),
        3: ("truncated", "truncated file"),
        4: ("not_image", "not an image"),
        5: ("too_small", f"too small: 10x10, each side must be >= {SIDE} px"),
        6: ("duplicate_image", f"duplicate of {good[0]} (row 1)"),
        7: ("duplicate_row", f"duplicate row for {good[0]} (first at row 1)"),
        8: ("bad_votes", "votes out of range: defect_votes=6 > total_votes=5"),
        9: ("bad_votes", "votes out of range: defect_votes=-1 is negative"),
        10: ("bad_votes", "votes out of range: total_votes=0"),
        11: ("bad_votes", "votes out of range: defect_votes='many' is not a number"),
        12: ("bad_votes", "votes out of range: defect_votes='2.5' is not a whole number"),
        13: ("missing_value", "missing value in required column(s) prompt_id"),
        14: ("missing_value", "missing value in required column(s) defect_votes, label"),
        15: ("missing_file", "image file missing: "),
        16: ("undecodable", "file is empty"),
        17: ("bad_label", "label not 0/1: 'yes'"),
        20: ("missing_file", "(a directory)"),
    }
    got = {e.row: (e.kind, e.reason) for e in report.excluded}
    assert set(got) == set(expected)
    for number, (kind, text) in expected.items():
        assert got[number][0] == kind, (number, got[number])
        assert text in got[number][1], (number, got[number])
    assert frame["row"].tolist() == [1, 18, 19]
    assert report.total == 20 and report.kept == 3
    assert frame["label"].tolist() == [0, 0, 1]
    # Nothing silent: the one-line summary is logged as a warning and counts every kind.
    summary = report.summary()
    assert "kept 3 of 20 rows" in summary and "excluded 17" in summary and "5 bad_votes" in summary
    assert any(r.levelno == logging.WARNING and r.getMessage() == summary for r in caplog.records)
    csv_path = report.to_csv(tmp_path / "out" / "excluded.csv")
    written = pd.read_csv(csv_path, keep_default_na=False)
    assert written.columns.tolist() == ["row", "image", "kind", "reason"] and len(written) == 17
    assert "row 4 (images/notes.png): not an image" in str(report)


def test_missing_vote_value_names_the_column(tmp_path: Path) -> None:
    # Votes-only table: an empty vote cell names the vote column.
    names = write_images(tmp_path, 1)
    write_table(
        tmp_path, [{"image": names[0], "prompt_id": 1, "system": "s", "defect_votes": None, "total_votes": 5}]
    )
    _, report = load(tmp_path)
    assert [(e.kind, e.reason) for e in report.excluded] == [
        ("missing_value", "missing value in required column(s) defect_votes")
    ]


def test_guard_without_image_checks_still_finds_missing_files(tmp_path: Path, good_rows: list[dict]) -> None:
    (tmp_path / "images" / "bad.png").write_bytes(b"not an image")
    rows = [
        *good_rows,
        dict(good_rows[0], image="images/bad.png"),
        dict(good_rows[0], image="images/gone.png"),
    ]
    write_table(tmp_path, rows)
    frame, report = load(tmp_path, check_images=False)
    assert len(frame) == 7 and [e.kind for e in report.excluded] == ["missing_file"]
    assert "image_sha256" not in frame.columns
    frame, report = load(tmp_path)
    assert [e.kind for e in report.excluded] == ["not_image", "missing_file"]


def test_min_side_default_rejects_small_images(tmp_path: Path, good_rows: list[dict]) -> None:
    write_table(tmp_path, good_rows)
    frame, report = load_assessor_logs(tmp_path)  # default min_side=256 > 64
    assert frame.empty and report.counts() == {"too_small": 6}
    with pytest.raises(DataFormatError, match="no usable rows"):
        load_judge_dataset(tmp_path)


# ------------------------------------------------------------------------------------------------ splits
@pytest.mark.parametrize("seed", range(8))
def test_splits_never_share_a_prompt(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_prompts = int(rng.integers(3, 60))
    frame = pd.DataFrame(
        {"prompt_id": [f"q{int(p)}" for p in rng.integers(0, n_prompts, 300)], "system": "s", "label": 0}
    )
    split = split_by_prompt(frame, seed=seed)
    assert (split.groupby("prompt_id")["split"].nunique() == 1).all()
    prompts = split.groupby("split")["prompt_id"].nunique()
    n = frame["prompt_id"].nunique()
    assert set(prompts.index) == {"train", "validation", "test"}  # >= 3 prompts: every split non-empty
    assert abs(prompts["train"] - 0.8 * n) <= 2
    # Deterministic, and independent of row order.
    again = split_by_prompt(frame.sample(frac=1, random_state=seed), seed=seed).sort_index()
    pd.testing.assert_frame_equal(split, again)


def test_split_seed_and_fractions() -> None:
    frame = pd.DataFrame({"prompt_id": [str(i) for i in range(100)]})
    a, b = split_by_prompt(frame, seed=0), split_by_prompt(frame, seed=1)
    assert (a["split"] != b["split"]).any()
    assert a["split"].value_counts().to_dict() == {"train": 80, "validation": 10, "test": 10}
    only = split_by_prompt(frame, fractions=(0.5, 0.5, 0.0))
    assert only["split"].value_counts().to_dict() == {"train": 50, "validation": 50}
    with pytest.raises(ValueError, match="fractions"):
        split_by_prompt(frame, fractions=(0.5, 0.2, 0.2))


def test_given_split_column_is_respected_and_validated() -> None:
    frame = pd.DataFrame(
        {"prompt_id": ["a", "a", "b", "c"], "split": ["test", "Test", "train", "validation"]}
    )
    out = split_by_prompt(frame, seed=3)
    assert out["split"].tolist() == ["test", "test", "train", "validation"]
    with pytest.raises(DataFormatError, match=r"prompt_id 'a' is in more than one split \(test, train\)"):
        split_by_prompt(frame.assign(split=["test", "train", "train", "test"]))
    with pytest.raises(DataFormatError, match=r"value\(s\) \['dev'\]"):
        split_by_prompt(frame.assign(split=["test", "test", "dev", "train"]))
    with pytest.raises(DataFormatError, match="empty values"):
        split_by_prompt(frame.assign(split=["test", "test", "", "train"]))
    # An all-empty column counts as absent.
    assert set(split_by_prompt(frame.assign(split=""))["split"]) <= {"train", "validation", "test"}


# ------------------------------------------------------------------------------------- HF dataset, hashes
def test_load_judge_dataset(tmp_path: Path) -> None:
    import datasets

    names = write_images(tmp_path, 8)
    split = ["train"] * 4 + ["validation"] * 2 + ["test"] * 2
    rows = [
        {"image": n, "prompt_id": i // 2, "system": f"s{i % 2}", "label": i % 2, "defect": "x", "split": s}
        for i, (n, s) in enumerate(zip(names, split, strict=True))
    ]
    write_table(tmp_path, rows)
    ds = load_judge_dataset(tmp_path, min_side=SIDE)
    assert isinstance(ds, datasets.DatasetDict) and list(ds) == ["train", "validation", "test"]
    assert ds["train"].column_names == list(DATASET_COLUMNS)
    assert isinstance(ds["train"].features["image"], datasets.Image)
    first = ds["validation"][0]
    assert isinstance(first["image"], Image.Image) and first["image"].size == (SIDE, SIDE)
    assert first["image_path"].endswith("img004.png") and first["prompt_id"] == "2" and first["defect"] == "x"
    test = load_judge_dataset(tmp_path, split="test", min_side=SIDE)
    assert isinstance(test, datasets.Dataset) and test["label"] == [0, 1]
    assert test["soft_label"] == [0.0, 1.0]


def test_dataset_fingerprint(tmp_path: Path, good_rows: list[dict]) -> None:
    write_table(tmp_path, good_rows)
    first = dataset_fingerprint(tmp_path)
    assert first == dataset_fingerprint(tmp_path) and len(first) == 64
    (tmp_path / "unrelated.txt").write_text("not part of the data")
    assert dataset_fingerprint(tmp_path) == first
    (tmp_path / good_rows[0]["image"]).write_bytes(png_bytes(999))
    changed = dataset_fingerprint(tmp_path)
    assert changed != first
    write_table(tmp_path, [dict(good_rows[0], defect_votes=4), *good_rows[1:]])
    assert dataset_fingerprint(tmp_path) != changed


def test_float_written_labels_and_gaps(tmp_path: Path) -> None:
    # pandas writes an int column with gaps as 1.0/0.0/"": accepted, and the gap is reported, not guessed.
    names = write_images(tmp_path, 3)
    labels = [1, 0, None]
    rows = [
        {"image": n, "prompt_id": i, "system": "s", "label": lab}
        for i, (n, lab) in enumerate(zip(names, labels, strict=True))
    ]
    assert "1.0" in write_table(tmp_path, rows).read_text()
    frame, report = load(tmp_path)
    assert frame["label"].tolist() == [1, 0]
    assert [(e.row, e.reason) for e in report.excluded] == [(3, "missing value in required column(s) label")]


def test_same_picture_in_two_systems_is_kept_and_noted(tmp_path: Path) -> None:
    # An SbS where two systems drew the same picture for a prompt: both rows are kept (noted, with the same
    # pixel hash so the picture is judged once); the same picture twice for one system and prompt is excluded.
    good = write_images(tmp_path, 2)
    img = tmp_path / "images"
    Image.open(tmp_path / good[0]).save(img / "copy_v2.png", compress_level=1)  # other bytes, same pixels
    Image.open(tmp_path / good[0]).save(img / "copy_v1.png", compress_level=9)
    rows = [
        {"image": good[0], "prompt_id": "p1", "system": "v1", "label": 0},
        {"image": "images/copy_v2.png", "prompt_id": "p1", "system": "v2", "label": 1},
        {"image": "images/copy_v1.png", "prompt_id": "p1", "system": "v1", "label": 0},
        {"image": good[1], "prompt_id": "p2", "system": "v1", "label": 0},
    ]
    write_table(tmp_path, rows)
    frame, report = load(tmp_path)
    assert frame["row"].tolist() == [1, 2, 4]
    assert [(e.row, e.kind, e.reason) for e in report.excluded] == [
        (3, "duplicate_image", f"duplicate of {good[0]} (row 1)")
    ]
    assert [(n.row, n.kind) for n in report.notes] == [(2, "shared_image")]
    assert f"same pixels as {good[0]} (row 1, system v1, prompt p1)" in report.notes[0].note
    assert frame["pixel_sha256"].iloc[0] == frame["pixel_sha256"].iloc[1] != frame["pixel_sha256"].iloc[2]
    assert frame["image_sha256"].iloc[0] != frame["image_sha256"].iloc[1]  # different files
    assert "1 kept rows share their pixels" in report.summary()
    assert "row 2 (images/copy_v2.png), kept: same pixels" in str(report)


def test_load_generations_labels_optional_and_folder_layout(tmp_path: Path) -> None:
    from vlm_judge.data import load_generations

    names = write_images(tmp_path / "canon", 3)
    rows = [{"image": n, "prompt_id": f"p{i}", "system": "s"} for i, n in enumerate(names)]
    write_table(tmp_path / "canon", rows)
    with pytest.raises(DataFormatError, match="missing required column"):
        load(tmp_path / "canon")  # training/eval.compare still need labels
    frame, report = load_generations(tmp_path / "canon", min_side=SIDE)
    assert len(frame) == 3 and frame["label"].isna().all() and frame["soft_label"].isna().all()
    # Labels on some rows only: the others are kept without one.
    write_table(tmp_path / "canon", [{**rows[0], "label": 1}, {**rows[1], "label": None}, rows[2]])
    frame, report = load_generations(tmp_path / "canon", min_side=SIDE)
    assert frame["label"].tolist()[0] == 1 and frame["label"].isna().tolist() == [False, True, True]

    layout = tmp_path / "renders"
    for system, seeds in (("gen-a", (1, 2)), ("gen-b", (3, 4))):
        (layout / system).mkdir(parents=True)
        for k, seed in enumerate(seeds):
            (layout / system / f"prompt{k}.png").write_bytes(png_bytes(seed))
    (layout / "gen-b" / "notes.txt").write_text("not a picture")
    (layout / "gen-b" / ".hidden.png").write_bytes(png_bytes(9))
    (layout / "README.md").write_text("top-level files are not renders")
    frame, report = load_generations(layout, min_side=SIDE)
    assert sorted(zip(frame["system"], frame["prompt_id"], strict=True)) == [
        ("gen-a", "prompt0"),
        ("gen-a", "prompt1"),
        ("gen-b", "prompt0"),
        ("gen-b", "prompt1"),
    ]
    assert [(e.image, e.kind) for e in report.excluded] == [("gen-b/notes.txt", "not_image")]
    assert report.source.endswith("(folder layout)")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataFormatError, match=r"nothing: empty: no label table"):
        load_generations(tmp_path / "nothing")
