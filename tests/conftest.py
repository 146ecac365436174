"""Shared fixtures: real structures from the embedded AMCSD default and the perov_5 table.

Helpers that tests import (paths, ``first_records``, ``TINY_GRAPH``, ``quiet_trainer``...) live
in the :mod:`helpers` package beside this file.
"""

from __future__ import annotations

import csv
import itertools
import sys
from pathlib import Path

import pytest
import torch

from clasp_pl.data.ingest import ingest_table
from clasp_pl.data.records import CrystalRecord, write_records
from helpers.data import PEROV_TABLE, first_records, shared_path
from helpers.viz import TinyIndex, build_tiny_index


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


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory) -> TinyIndex:
    """A tiny untrained CLaSP's index of 60 real AMCSD structures (map, serve, browser tests)."""
    return build_tiny_index(tmp_path_factory.getbasetemp() / "tiny_index")
