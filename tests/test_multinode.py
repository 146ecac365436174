"""Multi-node launch: the trainer presets, and a real two-node ``clasp fit`` over torchrun.

The two-node test starts two ``torchrun`` agents on 127.0.0.1 (``--nnodes 2 --nproc-per-node 1``,
node ranks 0 and 1), each running ``clasp fit --trainer.num_nodes 2 --trainer.devices 1
--trainer.strategy ddp`` (gloo on CPU) on the tiny config. Each "node" has its own working folder,
as separate machines would have their own disks: its own featurized cache, per-rank step records
(:class:`clasp_pl.training.callbacks.RunRecorder`) and checkpoint folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO
from unittest.mock import patch

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.environments import SLURMEnvironment

from clasp_pl.commands.fit import CLaSPCLI
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.training.callbacks import TRAINING_WEIGHTS, ResumeState, StopAfterSteps
from clasp_pl.training.checkpoint_io import AtomicCheckpointIO
from helpers.data import REPO
from helpers.ddp import free_port

CONF = REPO / "conf"
BASE_CONFIGS = ["trainer/cpu.yaml", "data/amcsd.yaml", "model/clasp.yaml", "model/tiny.yaml"]
SBATCH = REPO / "scripts" / "slurm_pretrain.sbatch"
LAUNCH_TIMEOUT_S = 150
LOCAL_BATCH = 8
STEPS = 4


def configs(*names: str) -> list[str]:
    return [arg for name in names for arg in ("--config", str(CONF / name))]


def instantiate(tmp_path: Path, records_file: Path, *args: str) -> CLaSPCLI:
    """The CLI's trainer, model and data for ``args`` on the tiny config, without running."""
    data = ["--data.records", str(records_file), "--data.cache_dir", str(tmp_path / "cache")]
    with patch.object(sys, "argv", ["clasp"]):  # not pytest's arguments
        return CLaSPCLI(CLaSPModule, CrystalTextDataModule, args=[*args, *data], run=False)


# ----------------------------------------------------------------------------- presets
def test_cpu_preset_checkpoints_atomically_into_one_resumable_last(tmp_path, records_file):
    trainer = instantiate(tmp_path, records_file, *configs(*BASE_CONFIGS)).trainer
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert any(isinstance(c, ResumeState) for c in trainer.callbacks)
    checkpoints = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert {c.dirpath for c in checkpoints} == {os.path.realpath("runs/pretrain/checkpoints")}
    assert not any(c._enable_version_counter for c in checkpoints)  # one last.ckpt, overwritten
    assert any(c._every_n_train_steps > 0 and c.save_last for c in checkpoints)  # mid-epoch too


def test_last_checkpoint_is_the_newest_state_when_the_best_is_older(
    tmp_path, records_file, monkeypatch
):
    """With the CPU preset, last.ckpt holds the final step even when the best checkpoint is from
    the first epoch (a monitored ModelCheckpoint's save_last would leave it there)."""
    monkeypatch.chdir(tmp_path)
    short = ["--trainer.max_epochs", "3", "--trainer.limit_train_batches", "2"]
    short += ["--data.batch_size", str(LOCAL_BATCH), "--data.split_fractions", "[0.6, 0.2, 0.2]"]
    cli = instantiate(tmp_path, records_file, *configs(*BASE_CONFIGS), *short)
    best = next(c for c in cli.trainer.callbacks if getattr(c, "monitor", None))
    best.monitor, best.mode = "epoch", "min"  # only epoch 0 is ever the best
    steps = next(c for c in cli.trainer.callbacks if getattr(c, "_every_n_train_steps", 0))
    steps._every_n_train_steps = 4  # as a long run's: a mid-run save, none at the end
    cli.trainer.fit(cli.model, cli.datamodule)
    folder = tmp_path / "runs" / "pretrain" / "checkpoints"
    assert sorted(p.name for p in folder.glob("*.ckpt")) == [
        "best-epoch=00-step=2.ckpt",
        "last.ckpt",
    ]
    last = torch.load(folder / "last.ckpt", weights_only=True)
    assert last["global_step"] == cli.trainer.global_step == 6


def test_resume_from_an_epoch_end_last_checkpoint_equals_the_straight_run(
    tmp_path, records_file, monkeypatch, one_torch_thread
):
    """``make pretrain RESUME=1`` after a 2-epoch run stopped at its epoch boundary (here by
    :class:`StopAfterSteps`, as by a wall-clock limit) ends with the weights of the run done
    straight: same step, schedule, data order and RNG (the tiny text tower trains with dropout).
    In one process CPU kernels may round differently from run to run (test_resume.py compares
    subprocesses bit for bit), hence 1e-6; a resume off by a step, a schedule or a dropout mask
    is off by orders of magnitude more."""
    args = [*configs(*BASE_CONFIGS), "--trainer.max_epochs", "2"]
    args += ["--trainer.limit_train_batches", "2", "--data.batch_size", str(LOCAL_BATCH)]
    args += ["--data.split_fractions", "[0.6, 0.2, 0.2]"]

    def fit(folder: Path, stop_at: int | None = None, ckpt_path: str | None = None) -> dict:
        folder.mkdir(exist_ok=True)
        monkeypatch.chdir(folder)
        cli = instantiate(tmp_path, records_file, *args)
        if stop_at is not None:
            cli.trainer.callbacks.append(StopAfterSteps(stop_at))
        cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt_path)
        return torch.load(folder / "runs/pretrain/checkpoints/last.ckpt", weights_only=True)

    straight = fit(tmp_path / "straight")
    assert fit(tmp_path / "resumed", stop_at=2)["global_step"] == 2  # the end of epoch 0
    resumed = fit(tmp_path / "resumed", ckpt_path="last")
    assert resumed["global_step"] == straight["global_step"] == 4
    for key in ("state_dict", TRAINING_WEIGHTS):  # the preset's weight average, trained weights
        for name, tensor in straight[key].items():
            torch.testing.assert_close(resumed[key][name], tensor, rtol=0, atol=1e-6)


def test_ddp_preset_is_gloo_on_cpu(tmp_path, records_file):
    args = configs(*BASE_CONFIGS, "trainer/ddp.yaml")
    trainer = instantiate(tmp_path, records_file, *args, "--trainer.devices", "1").trainer
    assert type(trainer.strategy).__name__ == "DDPStrategy"
    assert trainer.strategy.process_group_backend == "gloo"
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_gpu_preset_is_nccl_bf16_and_slurm_plugins_requeue(tmp_path, records_file, monkeypatch):
    slurm = {
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NAME": "clasp-pretrain",
        "SLURM_JOB_ID": "1234",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "gpu001",
    }
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    plugin_args = [w for w in SBATCH.read_text().split() if w.startswith("--trainer.plugins")]
    assert plugin_args, "the sbatch script adds the SLURM plugin"
    args = configs(*BASE_CONFIGS, "trainer/gpu.yaml")
    cpu_stand_in = ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]  # no GPU here
    trainer = instantiate(tmp_path, records_file, *args, *cpu_stand_in, *plugin_args).trainer
    assert trainer.strategy.process_group_backend == "nccl"
    assert trainer.precision == "bf16-mixed"
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
    assert environment.requeue_signal == signal.SIGUSR1
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_sbatch_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SBATCH)], check=True, timeout=30)


# ----------------------------------------------------------------------------- two nodes
def node_overlay(node: Path, records_file: Path) -> Path:
    """Per-node settings: a few steps, step records and checkpoints under the node's folder."""
    config = {
        "data": {
            "records": str(records_file),
            "cache_dir": "cache",
            "batch_size": LOCAL_BATCH,
            "eval_batch_size": 16,
            "split_fractions": [0.8, 0.1, 0.1],
        },
        "trainer": {
            "max_steps": STEPS,
            "limit_val_batches": 1,
            "num_sanity_val_steps": 0,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": "checkpoints",
                        "save_last": True,
                        "save_top_k": 0,
                        "every_n_train_steps": 2,
                    },
                },
                {"class_path": "clasp_pl.training.callbacks.ResumeState"},
                {"class_path": "clasp_pl.training.callbacks.WeightEMA"},
                {
                    "class_path": "clasp_pl.training.callbacks.RunRecorder",
                    "init_args": {"folder": "records"},
                },
            ],
        },
    }
    path = node / "node.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def launch_node(
    node: Path, node_rank: int, port: int, records_file: Path, log: TextIO
) -> subprocess.Popen:
    """One torchrun agent (node ``node_rank`` of 2, one process) running ``clasp fit``."""
    torchrun = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node_rank),
        "--master-addr", "127.0.0.1", "--master-port", str(port),
        "--max-restarts", "0", "--monitor-interval", "0.5",
    ]  # fmt: skip
    clasp = [
        "-m", "clasp_pl.cli", "fit",
        *configs(*BASE_CONFIGS, "trainer/ddp.yaml"),
        "--config", str(node_overlay(node, records_file)),
        "--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.strategy", "ddp",
    ]  # fmt: skip
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    return subprocess.Popen(
        [*torchrun, *clasp],
        cwd=node,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_all(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    """Return codes; on timeout every process group is SIGKILLed and the test fails."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in processes):
            if time.monotonic() > deadline:
                pytest.fail(f"two-node run still running after {timeout} s")
            time.sleep(0.2)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    return [p.returncode for p in processes]


@pytest.mark.ddp
@pytest.mark.slow
def test_two_nodes_of_one_process_train_on_a_gathered_global_batch(tmp_path, records_file):
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for node in nodes:
        node.mkdir()
    port = free_port()
    started = time.monotonic()
    with ExitStack() as stack:
        logs = [stack.enter_context(open(node / "launcher.log", "w")) for node in nodes]
        processes = [
            launch_node(node, rank, port, records_file, logs[rank])
            for rank, node in enumerate(nodes)
        ]
        codes = wait_all(processes, LAUNCH_TIMEOUT_S)
    logs = "\n".join((n / "launcher.log").read_text()[-4000:] for n in nodes)
    assert codes == [0, 0], logs
    print(f"two-node run: {time.monotonic() - started:.1f} s")

    records = [
        [
            json.loads(line)
            for line in (node / "records" / f"rank{rank}.jsonl").read_text().splitlines()
        ]
        for rank, node in enumerate(nodes)
    ]
    assert [len(r) for r in records] == [STEPS, STEPS]
    for rank, steps in enumerate(records):
        assert {(s["rank"], s["world_size"]) for s in steps} == {(rank, 2)}
    for step0, step1 in zip(*records, strict=True):
        assert step0["step"] == step1["step"]
        assert len(step0["group_ids"]) == len(step1["group_ids"]) == LOCAL_BATCH
        # both ranks scored the same world-size-wide batch: rank 0's rows, then rank 1's
        global_batch = step0["group_ids"] + step1["group_ids"]
        assert step0["gathered_group_ids"] == step1["gathered_group_ids"] == global_batch
        assert not set(step0["item_ids"]) & set(step1["item_ids"])  # disjoint shards
        assert step0["loss"] == pytest.approx(step1["loss"], rel=1e-6)  # the one global loss

    assert not list(nodes[1].rglob("*.ckpt")), "only global rank 0 writes checkpoints"
    checkpoint = torch.load(nodes[0] / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == STEPS
    assert checkpoint["callbacks"]["WeightEMA"]["updates"] == STEPS  # once per global step
