"""The one checkpoint reader: clear errors for missing, corrupt and refused files; settings."""

from __future__ import annotations

import os
import pathlib

import pytest
import torch

from clasp_pl.checkpoints import (
    CheckpointError,
    find_checkpoint,
    read_checkpoint,
    read_settings,
    write_checkpoint,
)


def unusable_file(path: pathlib.Path, kind: str) -> None:
    """Write a checkpoint file of ``kind`` (or none, for ``missing``) at ``path``."""
    pickled = {"path": pathlib.PurePosixPath("x")}
    if kind == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif kind == "truncated":
        torch.save({"a": torch.ones(100)}, path)
        path.write_bytes(path.read_bytes()[:200])
    elif kind == "pickled":
        torch.save(pickled, path)
    elif kind == "pickled-legacy":
        torch.save(pickled, path, _use_new_zipfile_serialization=False)
    elif kind == "list":
        torch.save([torch.ones(2)], path)


def test_written_checkpoint_reads_back_with_its_settings(tmp_path):
    weights = {"layer.weight": torch.arange(6.0).reshape(2, 3)}
    path = write_checkpoint(
        tmp_path / "run" / "model.ckpt",
        weights,
        {"width": 3, "_instantiator": "lightning.pytorch.cli.instantiate_module"},
        {"records": "r.jsonl.gz", "max_length": 64, "_class_path": "x.DataModule"},
        epoch=0,
    )
    checkpoint = read_checkpoint(path)
    assert torch.equal(checkpoint["state_dict"]["layer.weight"], weights["layer.weight"])
    assert checkpoint["epoch"] == 0 and checkpoint["pytorch-lightning_version"]
    settings = read_settings(path)
    assert settings.model == {"width": 3}  # LightningCLI's private entries left out
    assert settings.require_data() == {"records": "r.jsonl.gz", "max_length": 64}


def test_checkpoint_without_data_settings_names_the_fix(tmp_path):
    path = write_checkpoint(tmp_path / "bare.ckpt", {}, {"width": 3})
    settings = read_settings(path)
    assert settings.data == {}
    with pytest.raises(CheckpointError, match="records no data-module settings; use a"):
        settings.require_data()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "no such file"),
        ("garbage", "not a readable torch checkpoint"),
        ("truncated", "not a readable torch checkpoint"),
        ("pickled", "holds a pickled object (pathlib.PurePosixPath)"),
        ("pickled-legacy", "holds a pickled object (pathlib.PurePosixPath)"),
        ("list", "holds a list, not a checkpoint dict"),
    ],
)
def test_unusable_file_raises_one_error_with_reason_and_fix(tmp_path, kind, reason):
    path = tmp_path / "model.ckpt"
    unusable_file(path, kind)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    assert error.value.path == path and reason in error.value.reason
    assert len(error.value.reason) < 160 and "\n" not in error.value.reason  # torch's, shortened
    assert str(error.value).startswith(f"checkpoint {path}: {error.value.reason}; ")
    assert error.value.fix


def test_find_checkpoint_picks_the_last_or_on_request_the_best(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="no checkpoint under this folder"):
        find_checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)  # the default is runs/pretrain of the working folder
    with pytest.raises(CheckpointError, match="runs/pretrain: no checkpoint under this folder"):
        find_checkpoint()
    folder = tmp_path / "runs" / "pretrain" / "checkpoints"
    names = ["best-epoch=01.ckpt", "last.ckpt", "best-epoch=03.ckpt", "other.ckpt"]
    for age, name in enumerate(names):
        path = write_checkpoint(folder / name, {}, {})
        os.utime(path, (1000 + age, 1000 + age))
    assert find_checkpoint().name == "last.ckpt"  # not the newer best or other file
    assert find_checkpoint(choice="best").name == "best-epoch=03.ckpt"  # the newest best
    (folder / "last.ckpt").unlink()
    assert find_checkpoint(tmp_path / "runs").name == "other.ckpt"  # no last: the newest
    for best in folder.glob("best-*"):
        best.unlink()
    with pytest.raises(CheckpointError, match="no best"):
        find_checkpoint(choice="best")
