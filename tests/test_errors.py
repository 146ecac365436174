"""Errors a scientist can act on: one line naming the file, the reason and the fix; exit status 2;
the traceback only with ``clasp --debug``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from clasp_pl.cli import main as clasp
from clasp_pl.search.index import write_index
from helpers.data import REPO
from helpers.fit import TINY_FIT

TINY_FIT = [*TINY_FIT, "--trainer.max_steps", "1"]


def one_error_line(capsys) -> str:
    """The stderr of a failed command: exactly one line, ``error: ...``."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, lines
    assert "Traceback" not in "\n".join(lines)
    return errors[0]


@pytest.fixture()
def cif_folder(tmp_path) -> Path:
    folder = tmp_path / "cifs"
    folder.mkdir()
    (folder / "a.cif").write_text("data_a\n")
    return folder


@pytest.fixture()
def tiny_index(tmp_path) -> Path:
    folder = tmp_path / "tiny_index"
    write_index(folder, torch.eye(2), [{"id": "a"}, {"id": "b"}], {"checkpoint": "x.ckpt"})
    return folder


def test_a_refused_checkpoint(tmp_path, capsys, cif_folder) -> None:
    refused = tmp_path / "refused.ckpt"
    torch.save({"state_dict": OrderedDict(), "extra": Path("pickled")}, refused)
    argv = ["embed", "--ckpt", str(refused), "--input", str(cif_folder), "--out", "idx"]
    assert clasp([*argv, "--device", "cpu"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: checkpoint {refused}: holds a pickled object (pathlib.")
    assert "weights-only loading refuses" in line and "save it again" in line
    assert not Path("idx").exists()


def test_a_corrupt_checkpoint(tmp_path, capsys, cif_folder) -> None:
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 truncated")
    argv = ["embed", "--ckpt", str(corrupt), "--input", str(cif_folder), "--out", "idx"]
    assert clasp(argv) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: checkpoint {corrupt}: not a readable torch checkpoint")
    assert line.endswith("copy or train it again")


def test_a_missing_checkpoint(tmp_path, capsys, monkeypatch) -> None:
    missing = tmp_path / "missing.ckpt"
    assert clasp(["eval", "--ckpt", str(missing)]) == 2
    assert one_error_line(capsys) == (
        f"error: checkpoint {missing}: no such file; check the path, or train one with `clasp fit`"
    )
    monkeypatch.chdir(tmp_path)  # no runs/pretrain here: nothing to evaluate by default
    assert clasp(["eval"]) == 2
    assert one_error_line(capsys) == (
        "error: checkpoint runs/pretrain: no checkpoint under this folder; "
        "run `make pretrain` or pass --ckpt"
    )


def test_a_missing_index_folder(tmp_path, capsys) -> None:
    missing = tmp_path / "missing"
    assert clasp(["search", "--index", str(missing), "spinel"]) == 2
    assert one_error_line(capsys) == (
        f"error: index {missing}: no such folder; build the index with `clasp embed`"
    )
    assert clasp(["search", "--index", str(tmp_path), "spinel"]) == 2
    assert one_error_line(capsys) == (
        f"error: index {tmp_path}: no index.json in this folder; build the index with `clasp embed`"
    )


def test_a_missing_records_file(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert clasp([*TINY_FIT, "--data.records", "missing.jsonl.gz"]) == 2
    assert one_error_line(capsys).startswith(
        "error: records file missing.jsonl.gz: no such file; make one with `clasp data ingest`"
    )


def test_a_text_model_that_is_not_on_disk(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert clasp([*TINY_FIT, "--model.text.model", "/nonexistent"]) == 2
    assert one_error_line(capsys) == (
        "error: text model /nonexistent: no such folder; "
        "pass a folder holding a Hugging Face model, or a model id"
    )
    assert clasp([*TINY_FIT, "--model.text.model", "nobody/no-such-model"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(
        "error: text model nobody/no-such-model: neither a local folder nor in the Hugging Face "
        "cache, and HF_HUB_OFFLINE is set; on a machine with internet run "
        "`huggingface-cli download nobody/no-such-model`"
    )


def test_an_unknown_config_key(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert clasp(["fit", "--model.nope", "1"]) == 2
    assert one_error_line(capsys) == (
        "error: config command line: unrecognized arguments: --model.nope 1; "
        "check the key's spelling; `clasp fit --help` lists every option"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  nope: 1\n")
    assert clasp(["fit", "--config", str(bad)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: config {bad}: ") and "'model.nope'" in line
    assert not (tmp_path / "runs").exists()


def test_an_empty_cif_folder(tmp_path, capsys) -> None:
    empty = tmp_path / "emptydir"
    empty.mkdir()
    argv = ["embed", "--ckpt", "model.ckpt", "--input", str(empty), "--out", str(tmp_path / "i")]
    assert clasp(argv) == 2
    assert one_error_line(capsys) == (
        f"error: {empty}: no .cif files in this folder (searched recursively); "
        "pass a folder of CIFs"
    )


def test_a_query_file_with_no_queries(tmp_path, capsys, tiny_index) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    assert clasp(["search", "--index", str(tiny_index), "--queries", str(empty)]) == 2
    assert one_error_line(capsys) == (
        f"error: {empty}: holds no query; write one query per line (or a CSV/JSONL `query` column)"
    )


def test_debug_shows_the_traceback(tmp_path) -> None:
    """The console script in a fresh process: one line without ``--debug``, the traceback with."""
    argv = [sys.executable, "-m", "clasp_pl.cli", "search", "--index", str(tmp_path / "no"), "x"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert plain.returncode == 2
    assert plain.stderr.strip().splitlines() == [
        f"error: index {tmp_path / 'no'}: no such folder; build the index with `clasp embed`"
    ]
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, env=env)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "IndexFolderError" in debug.stderr
