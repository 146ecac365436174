"""Resumable ingestion: a real ``clasp data ingest`` process is SIGKILLed and run again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clasp_pl.data.ingest import ingest_folder, rejects_path_for
from clasp_pl.data.records import read_records
from clasp_pl.data.rejects import Reject
from clasp_pl.data.shards import ShardedOutput
from helpers.data import COD_SAMPLE, REPO, shared_path

SHARD = 20


@pytest.fixture
def many_cifs(tmp_path: Path) -> Path:
    """605 real COD CIFs: 55 copies of the ten sample files (ids differ by copy) and of one
    truncated file, which is rejected."""
    folder = tmp_path / "cifs"
    samples = sorted(shared_path(COD_SAMPLE).glob("*.cif"))
    for copy in range(55):
        target = folder / f"{copy:02d}"
        target.mkdir(parents=True)
        for path in samples:
            shutil.copy(path, target / f"{copy:02d}{path.name}")
        (target / f"{copy:02d}broken.cif").write_bytes(samples[0].read_bytes()[:1200])
    return folder


def _command(folder: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "clasp_pl.data.commands",
        "ingest",
        "--cifs",
        str(folder),
        "--out",
        str(out),
        "--shard-size",
        str(SHARD),
        "--no-progress",
    ]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "src")}


def _finished_shards(out: Path) -> int:
    try:
        manifest = json.loads((out.parent / (out.name + ".parts") / "manifest.json").read_text())
    except (OSError, ValueError):
        return 0
    return len(manifest["shards"])


def test_killed_ingest_resumes_to_the_same_bytes(many_cifs: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference.jsonl.gz"
    summary = ingest_folder(many_cifs, reference, progress=False, shard_size=SHARD)
    assert summary["kept"] == 550 and summary["rejected"] == {"unparseable": 55}
    assert not (tmp_path / "reference.jsonl.gz.parts").exists()  # assembled and cleaned up

    out = tmp_path / "killed.jsonl.gz"
    process = subprocess.Popen(_command(many_cifs, out), env=_environment())
    deadline = time.monotonic() + 120
    while _finished_shards(out) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = _finished_shards(out)
    total_shards = -(-605 // SHARD)
    assert process.returncode == -signal.SIGKILL and 1 <= done < total_shards
    assert not out.exists()  # the records file is written only at the end

    rerun = subprocess.run(
        _command(many_cifs, out), env=_environment(), capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resumed after {_finished_shards_line(rerun.stdout)} finished shards" in rerun.stdout
    assert int(_finished_shards_line(rerun.stdout)) >= done
    assert "kept 550 of 605" in rerun.stdout
    assert out.read_bytes() == reference.read_bytes()
    assert rejects_path_for(out).read_text() == rejects_path_for(reference).read_text()
    assert not (tmp_path / "killed.jsonl.gz.parts").exists()


def _finished_shards_line(stdout: str) -> str:
    line = next(line for line in stdout.splitlines() if line.startswith("resumed after"))
    return line.split()[2]


def test_another_key_or_shard_size_starts_over(tmp_path: Path) -> None:
    out, rejects = tmp_path / "out.jsonl.gz", tmp_path / "out.rejects.jsonl"
    results = [Reject("table.csv", str(k), "unparseable", f"row {k}") for k in range(45)]
    ShardedOutput(out, rejects, key="a", shard_size=SHARD).write(results)  # 20 + 20 + 5
    resumed = ShardedOutput(out, rejects, key="a", shard_size=SHARD)
    assert resumed.done_items == 45 and resumed.resumed == 3
    assert resumed.assemble()["rejected"] == {"unparseable": 45}
    assert len(rejects.read_text().splitlines()) == 45 and read_records(out) == []
    ShardedOutput(out, rejects, key="a", shard_size=SHARD).write(results[:20])
    assert ShardedOutput(out, rejects, key="b", shard_size=SHARD).done_items == 0
    ShardedOutput(out, rejects, key="a", shard_size=SHARD).write(results[:20])
    assert ShardedOutput(out, rejects, key="a", shard_size=10).done_items == 0
    with pytest.raises(ValueError):
        ShardedOutput(out, rejects, key="a", shard_size=0)
