"""Shared fixtures: real structures from the embedded AMCSD default and a tiny model config."""

from __future__ import annotations

import csv
import itertools
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.ingest import ingest_table
from clasp_pl.data.records import CrystalRecord, iter_records, write_records

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_RECORDS = REPO / "data" / "amcsd_default.jsonl.gz"
PEROV_TABLE = SHARED_DATA / "perov_5" / "val.csv"
COD_SAMPLE = SHARED_DATA / "cod_sample"


def shared_path(path: Path) -> Path:
    """``path`` in the shared data beside the checkout; the test is skipped where it is absent."""
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


TINY_GRAPH = GraphConfig(radius=5.0, max_neighbors=8)
TINY_MODEL = {
    "text": {"model": "tiny-random", "freeze": False},
    "crystal": {"atom_fea_len": 16, "n_conv": 2, "h_fea_len": 32},
    "heads": {"embed_dim": 16},
    "optim": {"warmup_steps": 2},
}


def first_records(n: int, max_sites: int = 40) -> list[CrystalRecord]:
    """The first ``n`` default-data records with at most ``max_sites`` sites (real structures)."""
    small = (r for r in iter_records(DEFAULT_RECORDS) if r.num_sites <= max_sites)
    return list(itertools.islice(small, n))


@pytest.fixture(scope="session")
def real_records() -> list[CrystalRecord]:
    """120 real AMCSD structures with their paper titles (several papers have many)."""
    return first_records(120)


@pytest.fixture(scope="session")
def records_file(tmp_path_factory, real_records) -> Path:
    path = tmp_path_factory.mktemp("records") / "small.jsonl.gz"
    write_records(real_records, path)
    return path


@pytest.fixture(scope="session")
def perov_records(tmp_path_factory) -> Path:
    """The first 300 perov_5 structures as records (``meta["heat_ref"]`` in eV/atom)."""
    shared_path(PEROV_TABLE)
    folder = tmp_path_factory.mktemp("perov")
    csv.field_size_limit(sys.maxsize)
    with open(PEROV_TABLE, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(itertools.islice(reader, 300))
    with open(folder / "perov300.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    summary = ingest_table(folder / "perov300.csv", folder / "perov300.jsonl.gz", progress=False)
    assert summary["kept"] == 300
    return folder / "perov300.jsonl.gz"


@pytest.fixture()
def one_torch_thread():
    """One intra-op thread for the test: bit-reproducible CPU kernels (two threads may sum in
    another order), and ~3x faster for tiny models on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quiet_trainer(max_epochs: int | None = None, max_steps: int = -1) -> L.Trainer:
    """CPU trainer without logging, checkpoints or per-epoch validation (saves test time)."""
    return L.Trainer(
        max_epochs=max_epochs,
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )


def save_lightning_checkpoint(module: L.LightningModule, path: Path) -> Path:
    """A minimal Lightning checkpoint (what ``load_from_checkpoint`` and ``init_from`` read)."""
    checkpoint = {
        "pytorch-lightning_version": L.__version__,
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path
