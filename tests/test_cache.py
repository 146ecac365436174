"""The sharded cache: round trip, reuse, rebuild on a changed key, resume after a hard kill."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from clasp_pl.data.cache import ArrayStore, ShardResult, build_store
from clasp_pl.data.rejects import Reject


def squares(inputs):
    """Per input n: a ragged item with n values and a fixed scalar; n < 0 is rejected."""
    result = ShardResult([])
    for n in inputs:
        if n < 0:
            result.rejects.append(Reject("inputs", str(n), "negative", f"{n} < 0"))
        else:
            result.items.append({"values": np.arange(n, dtype=np.float32) ** 2, "n": np.array([n])})
    return result


class CountingShards:
    def __init__(self):
        self.calls = 0

    def __call__(self, inputs):
        self.calls += 1
        return squares(inputs)


def test_round_trip_and_rejects(tmp_path):
    inputs = [3, 0, 5, -1, 2, 7, 1]
    store, rejects = build_store(tmp_path / "s", inputs, squares, {"v": 1}, "src", shard_size=3)
    assert [r.id for r in rejects] == ["-1"]
    assert len(store) == 6
    kept = [n for n in inputs if n >= 0]
    for i, n in enumerate(kept):
        np.testing.assert_array_equal(store[i]["values"], np.arange(n) ** 2)
        assert store[i]["n"].tolist() == [n]
    assert store.field("n").tolist() == kept
    assert store.lengths("values").tolist() == kept
    with pytest.raises(IndexError):
        store[6]


def test_reuse_and_rebuild_on_changed_key_or_source(tmp_path):
    counter = CountingShards()
    build_store(tmp_path / "s", [1, 2, 3, 4], counter, {"radius": 8.0}, "a", shard_size=2)
    assert counter.calls == 2
    build_store(tmp_path / "s", [1, 2, 3, 4], counter, {"radius": 8.0}, "a", shard_size=2)
    assert counter.calls == 2  # reused, nothing recomputed
    build_store(tmp_path / "s", [1, 2, 3, 4], counter, {"radius": 6.0}, "a", shard_size=2)
    assert counter.calls == 4  # changed featurization config: rebuilt
    build_store(tmp_path / "s", [1, 2, 3, 4], counter, {"radius": 6.0}, "b", shard_size=2)
    assert counter.calls == 6  # changed source: rebuilt
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["key"] == {"radius": 6.0}


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from clasp_pl.data.cache import build_store
    sys.path.insert(0, {tests!r})
    from test_cache import squares

    def dies_on_third_shard(inputs):
        if inputs[0] == 100:
            os.kill(os.getpid(), signal.SIGKILL)
        return squares(inputs)

    build_store({root!r}, [1, 2, 3, 4, 100, 5], dies_on_third_shard, {{"v": 1}}, "src", shard_size=2)
    """
)


def test_killed_build_resumes_where_it_stopped(tmp_path):
    root = tmp_path / "s"
    script = KILLER.format(tests=str(__import__("pathlib").Path(__file__).parent), root=str(root))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode != 0  # it really died
    manifest = json.loads((root / "manifest.json").read_text())
    assert not manifest["complete"]
    assert [s["name"] for s in manifest["shards"]] == ["shard-00000", "shard-00001"]
    with pytest.raises(RuntimeError, match="incomplete"):
        ArrayStore(root)

    counter = CountingShards()
    store, _ = build_store(root, [1, 2, 3, 4, 100, 5], counter, {"v": 1}, "src", shard_size=2)
    assert counter.calls == 1  # only the missing shard
    assert store.field("n").tolist() == [1, 2, 3, 4, 100, 5]


CONCURRENT = textwrap.dedent(
    """
    import logging, os, sys, time
    from clasp_pl.data.cache import build_store
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    sys.path.insert(0, {tests!r})
    from test_cache import squares

    def slow_logged(inputs):
        with open({log!r}, "a") as log:
            log.write(f"{{os.getpid()}} {{inputs[0]}}\\n")
        time.sleep(0.3)
        return squares(inputs)

    store, _ = build_store({root!r}, list(range(8)), slow_logged, {{"v": 1}}, "src", shard_size=2)
    print(len(store), store.field("n").tolist())
    """
)


def test_processes_building_one_store_at_once_build_it_once(tmp_path):
    """Two processes (say, rank 0 of two nodes on a shared filesystem) reach one store at
    once: one builds each shard exactly once, the other waits and opens the same store."""
    root, log = tmp_path / "s", tmp_path / "shards.log"
    tests = str(__import__("pathlib").Path(__file__).parent)
    script = CONCURRENT.format(tests=tests, root=str(root), log=str(log))
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    assert [out.splitlines()[-1] for out in outputs] == ["8 [0, 1, 2, 3, 4, 5, 6, 7]"] * 2
    assert sum("waiting for another process building" in out for out in outputs) == 1
    computed = log.read_text().split()
    assert sorted(int(first) for first in computed[1::2]) == [0, 2, 4, 6]  # each shard once
    assert len(set(computed[0::2])) == 1  # by one process


def test_parallel_build_equals_serial(tmp_path):
    inputs = list(range(20))
    serial, _ = build_store(tmp_path / "a", inputs, squares, {"v": 1}, "s", shard_size=3)
    parallel, _ = build_store(
        tmp_path / "b", inputs, squares, {"v": 1}, "s", shard_size=3, workers=2
    )
    for i in range(len(inputs)):
        np.testing.assert_array_equal(serial[i]["values"], parallel[i]["values"])


class DiesOn:
    """``squares`` that raises (a crashed build) on a shard containing ``fatal``."""

    def __init__(self, fatal: int):
        self.fatal = fatal

    def __call__(self, inputs):
        if self.fatal in inputs:
            raise RuntimeError("crash")
        return squares(inputs)


def test_resume_with_another_shard_size_starts_over(tmp_path):
    inputs = [1, 2, 100, 3, 4, 5, 6, 7, 8, 9]
    with pytest.raises(RuntimeError, match="crash"):
        build_store(tmp_path / "s", inputs, DiesOn(100), {"v": 1}, "src", shard_size=2)
    assert len(json.loads((tmp_path / "s" / "manifest.json").read_text())["shards"]) == 1
    store, _ = build_store(tmp_path / "s", inputs, squares, {"v": 1}, "src", shard_size=4)
    assert store.field("n").tolist() == inputs


def test_finished_store_is_reused_whatever_the_shard_size(tmp_path):
    counter = CountingShards()
    build_store(tmp_path / "s", [1, 2, 3, 4], counter, {"v": 1}, "src", shard_size=2)
    store, _ = build_store(tmp_path / "s", [1, 2, 3, 4], counter, {"v": 1}, "src", shard_size=4)
    assert counter.calls == 2 and store.field("n").tolist() == [1, 2, 3, 4]


def test_empty_store_has_empty_lengths_and_fields(tmp_path):
    store, rejects = build_store(tmp_path / "s", [-1, -2, -3], squares, {"v": 1}, "src", 2)
    assert len(store) == 0 and len(rejects) == 3
    assert store.lengths("values").shape == (0,) and store.field("n").shape == (0,)


def test_reject_with_placeholder_fields_keeps_its_place(tmp_path):
    def placeholders(inputs):
        rejects = [Reject("inputs", str(n), "negative", f"{n} < 0") for n in inputs if n < 0]
        return ShardResult([{"n": np.array([n])} for n in inputs], rejects)

    store, rejects = build_store(tmp_path / "s", [1, -2, 3], placeholders, {"v": 1}, "src")
    assert store.field("n").tolist() == [1, -2, 3] and [r.id for r in rejects] == ["-2"]
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert [Reject.from_dict(r) for r in manifest["rejects"]] == rejects


def test_opening_a_store_maps_its_offsets_instead_of_reading_them(tmp_path):
    """Per-item memory of an open store is on disk, not in each process: opening 200k items
    (2 fields: 3.2 MB of offsets) allocates almost nothing, and reading items still works."""
    import tracemalloc

    n = 200_000
    build_store(tmp_path / "s", [1] * n, squares, {"v": 1}, "src", shard_size=100_000)
    tracemalloc.start()
    try:
        store = ArrayStore(tmp_path / "s")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 200_000  # bytes; reading the offsets would allocate 16 B x n
    assert len(store) == n
    assert store[n - 1]["n"].tolist() == [1]
    assert store.lengths("values").sum() == n


def test_remembered_fingerprint_hashes_a_file_once_per_version(tmp_path, monkeypatch):
    import os

    from clasp_pl.data import cache

    hashed = []
    real = cache.file_fingerprint
    monkeypatch.setattr(cache, "file_fingerprint", lambda p: hashed.append(p) or real(p))
    records, memo = tmp_path / "records.jsonl", tmp_path / "cache" / "records-sha256.json"
    records.write_text("one\n")
    first = cache.remembered_fingerprint(records, memo)
    assert first == real(records) and len(hashed) == 1
    assert cache.remembered_fingerprint(records, memo) == first and len(hashed) == 1
    records.write_text("two\n")  # same size, rewritten: a new mtime
    os.utime(records, ns=(1, 1))
    second = cache.remembered_fingerprint(records, memo)
    assert second == real(records) != first and len(hashed) == 2
    memo.write_text("{not json")
    assert cache.remembered_fingerprint(records, memo) == second and len(hashed) == 3
