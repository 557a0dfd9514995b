"""`python -m vlm_judge.score`: folder/CSV input, rows as they finish, resume after failures and kills."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer, Reply
from PIL import Image

from vlm_judge.score import COLUMNS, main
from vlm_judge.serving.judge_server import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


def make_images(folder: Path, levels: list[int]) -> list[str]:
    names = []
    for i, level in enumerate(levels):
        path = folder / ("sub" if i % 2 else "") / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 48), (level, level, level)).save(path)
        names.append(path.relative_to(folder).as_posix())
    return names


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def score(server, input_path, output, *extra: str) -> int:
    return main(
        [
            "--base-url",
            server.base_url,
            "--model",
            "defect-judge",
            "--input",
            str(input_path),
            "--output",
            str(output),
        ]
        + ["--no-progress", "--max-retries", "1", *extra]
    )


def test_folder_input_writes_one_row_per_image(server, tmp_path, capsys):
    folder = tmp_path / "gens"
    names = make_images(folder, [51, 102, 153, 204])
    (folder / "notes.txt").write_text("not an image, not listed")
    output = tmp_path / "out" / "preds.csv"
    assert score(server, folder, output) == 0
    rows = {row["image"]: row for row in read_rows(output)}
    assert set(rows) == set(names)
    for name, level in zip(names, [51, 102, 153, 204], strict=True):
        assert float(rows[name]["p_defect"]) == pytest.approx(level / 255, abs=1e-6)
        assert float(rows[name]["latency_ms"]) > 0 and rows[name]["error"] == ""
    assert "scored 4, failed 0" in capsys.readouterr().err


def test_csv_input_bad_rows_get_named_errors_and_the_rest_scores(server, tmp_path, capsys):
    dataset = tmp_path / "dataset"
    names = make_images(dataset / "images", [51, 204])
    (dataset / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    labels = dataset / "labels.csv"
    with open(labels, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "prompt_id", "label"])
        for name in [
            *(f"images/{n}" for n in names),
            "images/broken.png",
            "images/missing.png",
            "images/img00.png",
        ]:
            writer.writerow([name, "p1", 0])
    output = tmp_path / "preds.csv"
    assert score(server, labels, output) == 0
    rows = {row["image"]: row for row in read_rows(output)}
    assert len(rows) == 4  # the duplicate row is scored once
    assert rows["images/broken.png"]["error"].startswith("ImageError: image 'images/broken.png'")
    assert "does not exist" in rows["images/missing.png"]["error"]
    assert rows["images/broken.png"]["p_defect"] == "" and rows["images/broken.png"]["latency_ms"] == ""
    assert float(rows["images/img00.png"]["p_defect"]) == pytest.approx(0.2, abs=1e-6)
    assert "failed 2 (ImageError: 2; see the error column)" in capsys.readouterr().err
    assert server.chat_requests == 2


def test_rerun_skips_done_images_and_retries_failed_ones(server, tmp_path):
    folder = tmp_path / "gens"
    names = make_images(folder, [51, 102, 153])
    output = tmp_path / "preds.csv"
    server.queue = [Reply.error(503, "overloaded")] * 2  # the first image to be sent fails twice (= gives up)
    assert (
        main(
            [
                "--base-url",
                server.base_url,
                "--model",
                "defect-judge",
                "--input",
                str(folder),
                "--output",
                str(output),
            ]
            + ["--no-progress", "--max-retries", "1", "--concurrency", "1"]
        )
        == 0
    )
    first = read_rows(output)
    failed = [row for row in first if row["error"]]
    assert len(failed) == 1 and failed[0]["error"].startswith("ServerError: HTTP 503")
    assert {row["method"] for row in first if not row["error"]} == {"top_k"}  # the fake has no vLLM /tokenize
    # A rerun whose retried image fails again exits as the first run did: the output holds scores.
    server.queue = [Reply.error(503, "overloaded")] * 2
    assert score(server, folder, output) == 0
    again = read_rows(output)
    assert len(again) == 3 and sum(bool(row["error"]) for row in again) == 1
    requests_before = server.chat_requests

    assert score(server, folder, output) == 0
    rows = read_rows(output)
    assert sorted(row["image"] for row in rows) == sorted(names)  # no duplicates, no stale error row
    assert all(row["error"] == "" for row in rows)
    assert server.chat_requests == requests_before + 1  # only the failed image was sent again

    assert score(server, folder, output) == 0  # nothing left: no request at all
    assert server.chat_requests == requests_before + 1


def test_a_partial_last_line_is_dropped_and_rescored(server, tmp_path):
    folder = tmp_path / "gens"
    names = make_images(folder, [51, 102])
    output = tmp_path / "preds.csv"
    output.write_text(
        f"image,p_defect,latency_ms,error\n{names[0]},0.2,5.0,\n{names[1]},0.4"
    )  # killed mid-write
    assert score(server, folder, output) == 0
    rows = read_rows(output)
    assert [row["image"] for row in rows] == names
    assert server.chat_requests == 1
    assert output.read_text().endswith("\n")


def test_kill_mid_run_then_resume_loses_nothing(tmp_path):
    folder = tmp_path / "gens"
    names = make_images(folder, [10 * i for i in range(12)])
    output = tmp_path / "preds.csv"
    slow = Reply.yes_no(0.5)
    slow.delay = 0.25
    with FakeOpenAIServer(default=slow) as server:
        command = [
            sys.executable,
            "-m",
            "vlm_judge.score",
            "--base-url",
            server.base_url,
            "--model",
            "defect-judge",
        ]
        command += ["--input", str(folder), "--output", str(output), "--no-progress", "--concurrency", "2"]
        process = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            not output.exists() or len(output.read_text().splitlines()) < 4
        ):
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        partial = read_rows(output)
        assert 3 <= len(partial) < len(names)

        assert subprocess.run(command, cwd=REPO_ROOT, capture_output=True, timeout=120).returncode == 0
    rows = read_rows(output)
    assert sorted(row["image"] for row in rows) == sorted(names)
    assert rows[: len(partial)] == partial  # what was written before the kill is kept as it was


@pytest.mark.parametrize(
    ("setup", "code", "message"),
    [
        ("missing-input", 2, "no such file or directory"),
        ("empty-folder", 2, "no image files"),
        ("csv-no-column", 2, "no 'image' column"),
        ("wrong-header", 2, "exists with columns"),
        ("unknown-model", 2, "model 'nope' is not served"),
        ("unreachable", 1, "cannot reach"),
    ],
)
def test_bad_input_exits_with_a_message_not_a_traceback(server, tmp_path, capsys, setup, code, message):
    folder = tmp_path / "gens"
    make_images(folder, [51])
    input_path, output, model, url = folder, tmp_path / "preds.csv", "defect-judge", server.base_url
    if setup == "missing-input":
        input_path = tmp_path / "nope"
    elif setup == "empty-folder":
        input_path = tmp_path / "empty"
        input_path.mkdir()
    elif setup == "csv-no-column":
        input_path = tmp_path / "list.csv"
        input_path.write_text("path\nimg00.png\n")
    elif setup == "wrong-header":
        output.write_text("a,b\n1,2\n")
    elif setup == "unknown-model":
        model = "nope"
    elif setup == "unreachable":
        url = f"http://127.0.0.1:{free_port()}/v1"
    args = [
        "--base-url",
        url,
        "--model",
        model,
        "--input",
        str(input_path),
        "--output",
        str(output),
        "--no-progress",
    ]
    assert main(args) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
