"""One tiny index shared by the map, search-page and browser tests, built once per session.

A tiny CLaSP (tiny-random text tower, 16-dim embeddings; untrained: these tests check what the
pages show and answer, not retrieval quality) embeds the first :data:`N_RECORDS` real AMCSD
structures into an index with :func:`~clasp_pl.viz.records_index.records_index`, the path
``clasp map`` / ``clasp serve`` take for the default dataset. The session fixture
``tiny_index`` (conftest.py) builds it once; the build is memoised per root folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L

from clasp_pl.data.records import write_records
from clasp_pl.models.cgcnn import CGCNNConfig
from clasp_pl.models.clasp import CLaSPModule, HeadsConfig
from clasp_pl.text.config import TextConfig
from clasp_pl.viz.records_index import records_index
from helpers.data import TINY_GRAPH, first_records
from helpers.lightning import save_lightning_checkpoint

N_RECORDS = 60


@dataclass(frozen=True)
class TinyIndex:
    """Paths of the shared fixture: checkpoint, records file, and the index folder."""

    ckpt: Path
    records: Path
    folder: Path


_BUILT: dict[Path, TinyIndex] = {}


def build_tiny_index(root: Path) -> TinyIndex:
    """Checkpoint, records and index under ``root`` (memoised per root)."""
    if root not in _BUILT:
        L.seed_everything(0)
        model = CLaSPModule(
            text=TextConfig(model="tiny-random", freeze=True),
            crystal=CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=32),
            graph=TINY_GRAPH,
            heads=HeadsConfig(embed_dim=16),
        )
        ckpt = save_lightning_checkpoint(model, root / "tiny.ckpt")
        records = root / "amcsd60.jsonl.gz"
        write_records(first_records(N_RECORDS), records)
        folder = records_index(records, ckpt, root / "cache")
        _BUILT[root] = TinyIndex(ckpt, records, folder)
    return _BUILT[root]
