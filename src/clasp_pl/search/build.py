"""Building an index folder: structures (a CIF folder or a table) -> records -> embeddings.

:func:`build_index` ingests a CIF folder (recursive) or a CSV/JSONL table with
:mod:`clasp_pl.data.ingest` into ``INDEX/records.jsonl.gz``, featurizes and embeds the records
with a trained model, and writes the index (:func:`~clasp_pl.search.index.write_index`). Inputs
that cannot be read or featurized are listed with their reason in ``INDEX/rejects.jsonl`` and
never stop the run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

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
from clasp_pl.data.cif import DEFAULT_MAX_ATOMS
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.ingest import IngestOptions, ingest_folder, ingest_table, parallel_map
from clasp_pl.data.records import CrystalRecord, iter_record_lines
from clasp_pl.data.rejects import Reject
from clasp_pl.errors import UserError
from clasp_pl.search.index import describe_model, write_index
from clasp_pl.search.meta import record_meta

RECORDS = "records.jsonl.gz"
"""The index folder's records file (the ingested structures)."""
REJECTS = "rejects.jsonl"
"""The index folder's rejects file (inputs left out, with their reason)."""


@dataclass(frozen=True)
class EmbedOptions:
    """How ``clasp embed`` builds an index.

    Attributes:
        workers: processes reading and featurizing the structures.
        require_text: reject structures without a title or abstract.
        dtype: storage type of the embeddings.
        batch_size: structures per forward pass.
        progress: show progress bars.
        max_atoms: sites kept per structure (a larger conventional cell is replaced by its
            primitive cell, else rejected as ``too_many_atoms``; see :mod:`clasp_pl.data.cif`).
    """

    workers: int = 1
    require_text: bool = False
    dtype: Literal["float16", "float32"] = "float16"
    batch_size: int = 128
    progress: bool = True
    max_atoms: int = DEFAULT_MAX_ATOMS


@dataclass
class IndexSummary:
    """What :func:`build_index` did.

    Attributes:
        out: the index folder.
        total: structures read.
        indexed: structures in the index.
        rejected: rejected structures per reason (reading and featurization).
    """

    out: Path
    total: int
    indexed: int
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rejects(self) -> Path:
        """The rejects file of the index."""
        return self.out / REJECTS


def featurize_record(
    line: str,
    config: GraphConfig,
    with_composition: bool = False,
    chgnet: ChgnetFeatures | None = None,
) -> tuple[CrystalInput, dict] | Reject:
    """Tower input (graph, composition descriptor ``with_composition``, CHGNet feature with
    ``chgnet``) and meta line of one records-file line; a failure becomes a reject."""
    record = CrystalRecord.from_json(line)
    try:
        structure = record.to_structure()
        crystal = crystal_input(structure, config, with_composition, chgnet)
        return crystal, record_meta(record, structure)
    except Exception as error:  # noqa: BLE001 - one bad structure must not stop the index
        return Reject(record.source, record.id, "featurization_failed", str(error))


def check_input(source: Path) -> None:
    """Raise :class:`UserError` unless ``source`` is a table or a folder holding CIF files."""
    if not source.exists():
        raise UserError(source, "no such folder or table", "pass a CIF folder or a CSV/JSONL table")
    if source.is_dir() and not any(p.suffix.lower() == ".cif" for p in source.rglob("*")):
        raise UserError(
            source, "no .cif files in this folder (searched recursively)", "pass a folder of CIFs"
        )


def build_index(
    ckpt: str | Path,
    source: str | Path,
    out: str | Path,
    options: EmbedOptions = EmbedOptions(),
    device: str = "cpu",
) -> IndexSummary:
    """Ingest, featurize and embed the structures of ``source`` into the index folder ``out``.

    Raises:
        UserError: ``source`` is missing or a folder without CIF files.
        CheckpointError: ``ckpt`` cannot be read (checked before any ingest).
    """
    source, out = Path(source), Path(out)
    check_input(source)
    model = load_model(ckpt, device)
    ingest = ingest_folder if source.is_dir() else ingest_table
    summary = ingest(
        source,
        out / RECORDS,
        rejects=out / REJECTS,
        options=IngestOptions(require_text=options.require_text, max_atoms=options.max_atoms),
        workers=options.workers,
        progress=options.progress,
    )
    results = parallel_map(
        partial(
            featurize_record,
            config=graph_config(model),
            with_composition=reads_composition(model),
            chgnet=chgnet_features(model),
        ),
        list(iter_record_lines(out / RECORDS)),
        workers=options.workers,
        progress=options.progress,
        desc="embed",
    )
    meta: list[dict] = []
    failed: list[Reject] = []

    def graphs() -> Iterator[CrystalInput]:
        for result in results:
            if isinstance(result, Reject):
                failed.append(result)
            else:
                meta.append(result[1])
                yield result[0]

    embeddings = embed_graphs(model, graphs(), options.batch_size)
    with open(out / REJECTS, "a", encoding="utf-8") as handle:
        handle.writelines(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in failed)
    write_index(out, embeddings, meta, describe_model(ckpt, model), options.dtype)
    reasons = Counter(summary["rejected"]) + Counter(r.reason for r in failed)
    return IndexSummary(out, summary["total"], len(meta), dict(sorted(reasons.items())))
