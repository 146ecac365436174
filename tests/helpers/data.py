"""Where the test data lives, and small sets of real structures from the embedded AMCSD default."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.records import CrystalRecord, iter_records
from clasp_pl.text.config import TextConfig

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
DEFAULT_RECORDS = REPO / "data" / "amcsd_default.jsonl.gz"
PEROV_TABLE = SHARED_DATA / "perov_5" / "val.csv"
COD_SAMPLE = SHARED_DATA / "cod_sample"

TINY_GRAPH = GraphConfig(radius=5.0, max_neighbors=8)


def shared_path(path: Path) -> Path:
    """``path`` in the shared data beside the checkout; the test is skipped where it is absent."""
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def first_records(n: int, max_sites: int = 40) -> list[CrystalRecord]:
    """The first ``n`` default-data records with at most ``max_sites`` sites (real structures)."""
    small = (r for r in iter_records(DEFAULT_RECORDS) if r.num_sites <= max_sites)
    return list(itertools.islice(small, n))


def data_module(records_file, tmp_path, text: TextConfig, **kwargs) -> CrystalTextDataModule:
    """A prepared and set-up data module over ``records_file`` with the tiny graph settings,
    title captions of 32 tokens, a 60/20/20 split and batches of 16 (32 in evaluation)."""
    dm = CrystalTextDataModule(
        records=str(records_file),
        cache_dir=str(tmp_path / "cache"),
        text=text,
        caption_fields=["title"],
        max_length=32,
        graph=TINY_GRAPH,
        split_fractions=(0.6, 0.2, 0.2),
        batch_size=16,
        eval_batch_size=32,
        **kwargs,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm
