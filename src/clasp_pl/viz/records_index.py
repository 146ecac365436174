"""An index of a records file (the default AMCSD data) for a checkpoint, built once and reused.

``clasp map`` and ``clasp serve`` without ``--index`` show the default dataset. Its index is
built here from the records themselves (``clasp embed`` reads CIF folders and tables, not a
records file) into ``<records cache root>/index-<checkpoint sha256 prefix>/``: the same folder
layout as ``clasp embed`` writes (``embeddings.npy``, ``meta.jsonl``, ``index.json``, and
``records.jsonl.gz`` of the structures it kept), so every reader of an index reads it too.
A changed checkpoint file has another sha256 and so gets its own index.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from clasp_pl.api import (
    CrystalInput,
    chgnet_features,
    crystal_input,
    embed_graphs,
    graph_config,
    load_model,
    reads_composition,
)
from clasp_pl.data.chgnet_features import ChgnetFeatures
from clasp_pl.data.datamodule import records_cache_root
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.parallel import parallel_map
from clasp_pl.data.records import CrystalRecord, iter_record_lines, write_records
from clasp_pl.search.index import INFO, checkpoint_sha256, describe_model, write_index
from clasp_pl.search.meta import record_meta
from clasp_pl.viz.points import INDEX_RECORDS

log = logging.getLogger(__name__)

"""Default ``cache_dir``: where the data module keeps its caches."""

Featurized = tuple[CrystalRecord, CrystalInput, dict] | None


def records_index_folder(records: str | Path, ckpt: str | Path, cache_dir: str | Path) -> Path:
    """Where the index of ``records`` embedded by ``ckpt`` lives under ``cache_dir``."""
    return records_cache_root(cache_dir, records) / f"index-{checkpoint_sha256(ckpt)}"


def records_index(
    records: str | Path,
    ckpt: str | Path,
    cache_dir: str | Path,
    device: str = "cpu",
    workers: int = 1,
    batch_size: int = 128,
) -> Path:
    """The index folder of ``records`` embedded with ``ckpt``; built when absent.

    Structures that cannot become a graph are left out (counted in the log).
    """
    folder = records_index_folder(records, ckpt, cache_dir)
    if (folder / INFO).is_file():
        return folder
    log.info("embedding %s with %s into %s (once)", records, ckpt, folder)
    model = load_model(ckpt, device)
    lines = list(iter_record_lines(records))
    results = parallel_map(
        partial(
            _featurize,
            config=graph_config(model),
            with_composition=reads_composition(model),
            chgnet=chgnet_features(model),
        ),
        lines,
        workers=workers,
        progress=False,
        desc="index",
    )
    kept: list[CrystalRecord] = []
    meta: list[dict] = []

    def graphs() -> Iterator[CrystalInput]:
        for result in results:
            if result is not None:
                kept.append(result[0])
                meta.append(result[2])
                yield result[1]

    embeddings = embed_graphs(model, graphs(), batch_size)
    if len(kept) < len(lines):
        log.warning(
            "%d of %d structures could not be featurized", len(lines) - len(kept), len(lines)
        )
    folder.mkdir(parents=True, exist_ok=True)
    write_records(kept, folder / INDEX_RECORDS)
    return write_index(folder, embeddings, meta, describe_model(ckpt, model))


def _featurize(
    line: str, config: GraphConfig, with_composition: bool, chgnet: ChgnetFeatures | None
) -> Featurized:
    """``(record, tower input, meta line)`` of one records-file line; None when it fails."""
    record = CrystalRecord.from_json(line)
    try:
        structure = record.to_structure()
        crystal = crystal_input(structure, config, with_composition, chgnet)
        return record, crystal, record_meta(record, structure)
    except Exception:  # noqa: BLE001 - one bad structure must not stop the index
        return None
