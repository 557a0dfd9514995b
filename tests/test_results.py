"""The per-item results store behind vlm_judge.score (CSV) and the eval cache (JSONL): what survives a kill,
what a rerun redoes, and that a retry leaves one record per item."""

from __future__ import annotations

import json

import pytest

from eval.scoring import cache_key
from vlm_judge.results import ResultStore, ResultStoreError, succeeded

COLUMNS = ["image", "p_defect", "latency_ms", "error"]


def test_csv_store_keeps_quoted_text_and_rewrites_only_to_drop(tmp_path):
    path = tmp_path / "preds.csv"
    with ResultStore(path, columns=COLUMNS, key="image") as store:
        store.append("a.png", {"p_defect": 0.25, "latency_ms": "5.0", "error": None})
        store.append("b.png", {"p_defect": None, "latency_ms": None, "error": 'ServerError: "x",\nline two'})
        store.append("c.png", {"p_defect": 0.75, "latency_ms": "6.0", "error": None})
    assert path.read_text().splitlines()[:2] == ["image,p_defect,latency_ms,error", "a.png,0.25,5.0,"]
    before = path.stat().st_mtime_ns

    store = ResultStore(path, columns=COLUMNS, key="image")
    assert store.get("b.png")["error"] == 'ServerError: "x",\nline two' and store.corrupt_lines == 0
    assert [store.done(k, retry_failed=True) for k in ("a.png", "b.png", "c.png", "d.png")] == [
        True,
        False,
        True,
        False,
    ]
    assert store.done("b.png")  # kept as a result unless failures are retried
    store.discard(["a.png-not-there"])  # nothing to drop: the file is left alone
    assert path.stat().st_mtime_ns == before
    store.discard(["b.png"])
    store.append("b.png", {"p_defect": 0.5, "latency_ms": "7.0", "error": None})
    store.close()
    again = ResultStore(path, columns=COLUMNS, key="image")
    assert list(again.records) == ["a.png", "c.png", "b.png"]  # done rows stay where and as they were
    assert again.get("a.png") == {"image": "a.png", "p_defect": "0.25", "latency_ms": "5.0", "error": ""}
    assert len(path.read_text().splitlines()) == 4

    # A file of an older version (fewer columns, the new ones at the end): read, and rewritten with the new header.
    older = path.with_name("older.csv")
    older.write_text("image,p_defect\nx.png,0.5\ny.png,\n")
    upgraded = ResultStore(older, columns=COLUMNS, key="image")
    assert upgraded.get("x.png") == {"image": "x.png", "p_defect": "0.5", "latency_ms": "", "error": ""}
    assert older.read_text().splitlines()[0] == ",".join(COLUMNS)
    upgraded.append("z.png", {"p_defect": 0.1, "latency_ms": "1.0", "error": None})
    upgraded.close()
    assert len(ResultStore(older, columns=COLUMNS, key="image")) == 3

    path.write_text("a,b\n1,2\n")
    with pytest.raises(ResultStoreError, match=r"exists with columns \['a', 'b'\], not \['image'"):
        ResultStore(path, columns=COLUMNS, key="image")


def test_cache_survives_a_torn_line_and_last_record_wins(tmp_path):
    path = tmp_path / "j.jsonl"
    with ResultStore(path) as cache:
        cache.append("k1", {"p_defect": 0.1, "error": None})
        cache.append("k2", {"p_defect": None, "error": "boom"})
    with open(path, "a") as handle:
        handle.write('{"key": "k3", "p_def')  # a kill mid-write
    cache = ResultStore(path)
    assert cache.corrupt_lines == 1 and set(cache.records) == {"k1", "k2"}
    cache.append("k2", {"p_defect": 0.7, "error": None})  # re-queried item: appended, last wins
    cache.close()
    again = ResultStore(path)
    assert again.corrupt_lines == 1 and again.get("k2")["p_defect"] == 0.7 and len(again) == 2
    assert cache_key("a" * 64, "h", "v1") != cache_key("a" * 64, "h", "v2") != cache_key("a" * 64, "h2", "v2")


def test_jsonl_store_retry_leaves_one_record_per_key(tmp_path):
    path = tmp_path / "judge.jsonl"
    with ResultStore(path) as store:
        store.append("k1", {"p_defect": 0.1, "error": None, "note": "line\u2028separator"})
        store.append("k2", {"p_defect": None, "error": "boom"})
    path.write_text(path.read_text() + '{"key": "k3", "p_d')  # a kill mid-write
    store = ResultStore(path)
    assert store.corrupt_lines == 1 and store.get("k1")["note"] == "line\u2028separator"
    assert not store.done("k2", retry_failed=True) and store.done("k2")
    store.discard(["k2"])  # drops the failed record and the torn line in one rewrite
    store.append("k2", {"p_defect": 0.7, "error": None})
    store.close()
    lines = [json.loads(line) for line in path.read_text().split("\n") if line]
    assert [line["key"] for line in lines] == ["k1", "k2"] and lines[1]["p_defect"] == 0.7


def test_success_means_a_probability_and_no_error():
    assert succeeded({"p_defect": 0.0, "error": None}) and succeeded({"p_defect": "1.0", "error": ""})
    for record in (
        {"p_defect": None, "error": "x"},
        {"p_defect": 0.3, "error": "x"},
        {"p_defect": "", "error": ""},
        {"p_defect": "nan"},
        {"p_defect": 1.5},
        {},
    ):
        assert not succeeded(record), record


def test_eval_cache_keys_are_unchanged():
    # Cache files written by earlier versions must still hit: the key of a fixed input never changes.
    assert cache_key("a" * 64, "h", "v1") == "502a6684103f83f8188601685060cfec"
