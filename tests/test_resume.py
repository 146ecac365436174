"""Exact resume and crash-safe checkpoints.

- The training order is a function of (seed, epoch) and the loader resumes mid-epoch (in-process).
- A crash or kill while a checkpoint is written leaves the previous one loadable (in-process and a
  killed subprocess).
- ``clasp fit`` runs (subprocesses, tiny model, 120 real structures, 2 epochs): a run stopped
  cleanly mid-epoch, and a run SIGKILLed after a mid-run checkpoint, both resumed with
  ``--ckpt_path last``, reproduce the uninterrupted run exactly: the same global steps, batches,
  losses and learning rates after the restart, and bitwise-equal final weights, optimizer and
  LR-scheduler states (tolerance 0: same process setup, deterministic CPU kernels).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.loading import EpochShuffleSampler, ResumableDataLoader
from clasp_pl.text.config import TextConfig
from clasp_pl.training.callbacks import TRAINING_WEIGHTS
from clasp_pl.training.checkpoint_io import AtomicCheckpointIO
from helpers.data import REPO, TINY_GRAPH

CONF = REPO / "conf"
BASE_CONFIGS = ["trainer/cpu.yaml", "data/amcsd.yaml", "model/clasp.yaml", "model/tiny.yaml"]
RUN_TIMEOUT_S = 180
EVERY = 4  # checkpoint period (optimizer steps)
STOP = 16  # clean stop: inside the second epoch (13 batches per epoch)


class Numbers(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


# ----------------------------------------------------------------------------- data order
def test_permutation_is_a_function_of_seed_and_epoch():
    def order(seed: int, epoch: int) -> list[int]:
        sampler = EpochShuffleSampler(Numbers(50), seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order(3, 1) == order(3, 1)
    assert sorted(order(3, 1)) == list(range(50))
    assert order(3, 1) != order(3, 2)
    assert order(3, 1) != order(4, 1)


def test_loader_resumes_mid_epoch_and_rolls_over_a_finished_epoch():
    def loader() -> ResumableDataLoader:
        return ResumableDataLoader(Numbers(50), batch_size=4, seed=0)

    straight = loader()
    straight.sampler.set_epoch(1)
    batches = [b.tolist() for b in straight]
    assert len(batches) == len(straight) == 12  # full batches only

    first = loader()
    first.sampler.set_epoch(1)
    iterator = iter(first)
    head = [next(iterator).tolist() for _ in range(5)]
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 5}

    resumed = loader()
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)  # what Lightning does at the epoch start: keeps the offset
    assert head + [b.tolist() for b in resumed] == batches
    assert resumed.state_dict() == {"epoch": 1, "batches": 12}

    rolled = loader()
    rolled.load_state_dict({"epoch": 1, "batches": 12})
    assert rolled.sampler.epoch == 2 and rolled.sampler.start == 0


# ----------------------------------------------------------------------------- atomic saves
def _half_write_then_fail(obj, handle, *args, **kwargs):
    """Stand-in for ``torch.save``: write half of the real bytes, then fail like a dying disk."""
    buffer = io.BytesIO()
    REAL_TORCH_SAVE(obj, buffer)
    data = buffer.getvalue()
    handle.write(data[: len(data) // 2])
    handle.flush()
    raise OSError("simulated crash during checkpoint write")


REAL_TORCH_SAVE = torch.save


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint_io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    checkpoint_io.save_checkpoint({"global_step": 1, "w": torch.arange(10_000.0)}, path)

    monkeypatch.setattr(torch, "save", _half_write_then_fail)
    with pytest.raises(OSError, match="simulated crash"):
        checkpoint_io.save_checkpoint({"global_step": 2, "w": torch.zeros(10_000)}, path)
    monkeypatch.undo()

    restored = checkpoint_io.load_checkpoint(path)
    assert restored["global_step"] == 1 and torch.equal(restored["w"], torch.arange(10_000.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temp file left


KILLED_WRITER = """
import io, os, signal, sys, torch
from clasp_pl.training.checkpoint_io import AtomicCheckpointIO
real_save = torch.save
def half_then_die(obj, handle, *args, **kwargs):
    buffer = io.BytesIO(); real_save(obj, buffer); data = buffer.getvalue()
    handle.write(data[: len(data) // 2]); handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = half_then_die
AtomicCheckpointIO().save_checkpoint({"global_step": 2, "w": torch.zeros(10_000)}, sys.argv[1])
"""


def test_writer_killed_mid_save_leaves_previous_checkpoint_and_orphan_is_cleaned(tmp_path):
    checkpoint_io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    checkpoint_io.save_checkpoint({"global_step": 1, "w": torch.arange(10_000.0)}, path)
    result = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path)], timeout=120, capture_output=True
    )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    orphans = [p for p in tmp_path.iterdir() if p.name != "last.ckpt"]
    assert len(orphans) == 1 and orphans[0].name.endswith(".tmp")  # the half-written file
    assert checkpoint_io.load_checkpoint(path)["global_step"] == 1

    checkpoint_io.save_checkpoint({"global_step": 3, "w": torch.ones(3)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert checkpoint_io.load_checkpoint(path)["global_step"] == 3


# ----------------------------------------------------------------------------- clasp fit runs
@pytest.fixture(scope="module")
def workspace(tmp_path_factory, records_file) -> Path:
    """A folder with the featurized cache of ``records_file`` for the tiny config."""
    root = tmp_path_factory.mktemp("resume")
    datamodule = CrystalTextDataModule(
        records=str(records_file),
        cache_dir=str(root / "cache"),
        text=TextConfig(model="tiny-random"),
        caption_fields=["title"],
        max_length=32,
        graph=TINY_GRAPH,
    )
    datamodule.prepare_data()
    return root


def phase_config(root: Path, records_file: Path, run: str, phase: str, *callbacks: dict) -> Path:
    """Overlay for one ``clasp fit`` call: checkpoints in ``<run>/checkpoints``, records in
    ``<run>/<phase>``; 2 epochs of batch 8, one validation batch per epoch."""
    config = {
        "data": {
            "records": str(records_file),
            "cache_dir": str(root / "cache"),
            "batch_size": 8,
            "eval_batch_size": 16,
            "split_fractions": [0.8, 0.1, 0.1],
        },
        "trainer": {
            "max_epochs": 2,
            "limit_val_batches": 1,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(root / run / "checkpoints"),
                        "save_last": True,
                        "save_top_k": 0,
                        "every_n_train_steps": EVERY,
                    },
                },
                {"class_path": "clasp_pl.training.callbacks.ResumeState"},
                {
                    "class_path": "clasp_pl.training.callbacks.WeightEMA",
                    "init_args": {"half_life_steps": 3},
                },
                {
                    "class_path": "clasp_pl.training.callbacks.RunRecorder",
                    "init_args": {"folder": str(root / run / phase)},
                },
                *callbacks,
            ],
        },
    }
    path = root / run / f"{phase}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def fit_command(overlay: Path, *extra: str) -> list[str]:
    configs = [arg for name in BASE_CONFIGS for arg in ("--config", str(CONF / name))]
    return [sys.executable, "-m", "clasp_pl.cli", "fit", *configs, "--config", str(overlay), *extra]


def clasp_env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def run_fit(cwd: Path, command: list[str]) -> None:
    """Run ``clasp fit`` to completion (killed and failed after ``RUN_TIMEOUT_S``)."""
    result = subprocess.run(
        command, cwd=cwd, env=clasp_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def read_records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "rank0.jsonl").read_text().splitlines()]


def checkpoint_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


@pytest.fixture(scope="module")
def straight(workspace, records_file) -> list[dict]:
    """Records of the uninterrupted run (its final checkpoint is ``straight/checkpoints``)."""
    run_fit(workspace, fit_command(phase_config(workspace, records_file, "straight", "records")))
    return read_records(workspace / "straight" / "records")


def assert_exact_continuation(straight: list[dict], resumed: list[dict], start: int) -> None:
    """``resumed`` repeats ``straight`` from step ``start + 1`` to the end, bit for bit."""
    assert [r["step"] for r in resumed] == [r["step"] for r in straight[start:]]
    for a, b in zip(straight[start:], resumed, strict=True):
        assert a["item_ids"] == b["item_ids"], f"step {a['step']}: another batch"
        assert a["epoch"] == b["epoch"]
        assert a["loss"] == b["loss"], f"step {a['step']}: loss {a['loss']} != {b['loss']}"
        assert a["lr"] == b["lr"], f"step {a['step']}: lr {a['lr']} != {b['lr']}"


def assert_same_final_state(first: Path, second: Path) -> None:
    a = torch.load(first, map_location="cpu", weights_only=False)
    b = torch.load(second, map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    for key in ("state_dict", TRAINING_WEIGHTS):  # the weight average, the trained weights
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}: {name}"
    assert a["callbacks"]["WeightEMA"] == b["callbacks"]["WeightEMA"]
    for group_a, group_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for key, state in group_a["state"].items():
            for field, value in state.items():
                assert torch.equal(
                    torch.as_tensor(value), torch.as_tensor(group_b["state"][key][field])
                )
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.mark.slow
def test_clean_stop_then_resume_from_last_is_exact(workspace, records_file, straight):
    total = straight[-1]["step"]
    assert straight[STOP - 1]["epoch"] == 1 and total > STOP + 2  # stop inside the 2nd epoch
    stop = {
        "class_path": "clasp_pl.training.callbacks.StopAfterSteps",
        "init_args": {"steps": STOP},
    }
    run_fit(workspace, fit_command(phase_config(workspace, records_file, "clean", "first", stop)))
    last = workspace / "clean" / "checkpoints" / "last.ckpt"
    assert [r["step"] for r in read_records(workspace / "clean" / "first")][-1] == STOP
    assert checkpoint_step(last) == STOP

    resume = phase_config(workspace, records_file, "clean", "second")
    run_fit(workspace, fit_command(resume, "--ckpt_path", "last"))
    assert_exact_continuation(straight, read_records(workspace / "clean" / "second"), STOP)
    assert_same_final_state(workspace / "straight" / "checkpoints" / "last.ckpt", last)


@pytest.mark.slow
def test_sigkill_after_mid_run_checkpoint_then_resume_is_exact(workspace, records_file, straight):
    total = straight[-1]["step"]
    first = phase_config(workspace, records_file, "kill", "first")
    records = workspace / "kill" / "first" / "rank0.jsonl"
    process = subprocess.Popen(
        fit_command(first),
        cwd=workspace,
        env=clasp_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        # the checkpoint of step EVERY is written before step EVERY + 1 is recorded
        while not (records.exists() and len(records.read_text().splitlines()) > EVERY):
            assert process.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint within the timeout"
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    last = workspace / "kill" / "checkpoints" / "last.ckpt"
    start = checkpoint_step(last)  # what `--ckpt_path last` must resolve to
    assert start % EVERY == 0 and 0 < start < total

    run_fit(
        workspace,
        fit_command(phase_config(workspace, records_file, "kill", "second"), "--ckpt_path", "last"),
    )
    assert_exact_continuation(straight, read_records(workspace / "kill" / "second"), start)
    assert_same_final_state(workspace / "straight" / "checkpoints" / "last.ckpt", last)
