"""Records -> cached tensors: crystal graphs and caption token ids, in resumable shards.

Each store is keyed by exactly what it depends on, so changing the tokenizer does not recompute
graphs and changing the cutoff does not re-tokenize. The ``build_*`` functions take a records
file, or a :class:`RecordSource` (its lines and fingerprint, read once: the data modules build
several stores from one reading, and a keywords file applied to the records is part of the text
stores' fingerprint):

- ``graphs/``: one item per featurizable record: the fields of
  :class:`~clasp_pl.data.graphs.CrystalGraph` (``site_species_z``, ``site_occupancy``,
  ``species_per_site``: every site's species and occupancies, disorder kept; ``edge_src``,
  ``edge_dst``, ``edge_dist`` in Å), ``record_index`` and ``group_id`` (paper id, int64);
- ``tokens/``: one item per record (same order as the records file): ``input_ids`` (int32,
  truncated to ``max_length``, unpadded);
- ``text_features/`` (only for a frozen text tower): one ``[1, H]`` float32 item per record, the
  tower's pooled output computed once in eval mode, so training steps skip the text tower;
- ``text_hidden/`` (only for a text tower with ``trainable_layers`` set): one
  ``[n_tokens, H]`` item per record (float32 or float16), the hidden states after the frozen
  lower layers computed once in eval mode, so training steps run only the top layers;
- ``composition/`` (only for the composition-only baseline): one ``[1, 333]`` descriptor per
  record (see :mod:`clasp_pl.data.composition`); all NaN for a record whose descriptor fails.

Stores of one feature row per record (``composition/``, and ``chgnet/`` of
:mod:`clasp_pl.data.chgnet_features`) hold a ``valid [1]`` bool beside each ``features [1, D]``
row (:func:`feature_row_item`), so a reader finds the usable rows by reading ``N`` bytes
(:func:`valid_rows`) instead of the whole ``[N, D]`` matrix (533 MB at 400k descriptors).

A record whose graph or descriptor cannot be computed is a ``featurization_failed``
:class:`~clasp_pl.data.rejects.Reject` (logged, and returned by the ``build_*`` functions that
featurize structures), never the end of the build.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from clasp_pl.data.cache import (
    ArrayStore,
    Item,
    ShardFn,
    ShardResult,
    build_store,
    file_fingerprint,
)
from clasp_pl.data.composition import (
    COMPOSITION_DIM,
    COMPOSITION_FORMAT_VERSION,
    composition_features,
)
from clasp_pl.data.graphs import GraphConfig, structure_to_graph
from clasp_pl.data.records import CrystalRecord, iter_record_lines, stable_hash64
from clasp_pl.data.rejects import Reject
from clasp_pl.data.text import CAPTION_FORMAT_VERSION, compose_caption
from clasp_pl.rank_zero import rank_zero_logger
from clasp_pl.text.features import FrozenLowerLayers, FrozenTextFeatures, HiddenDtype
from clasp_pl.text.sources import load_tokenizer, resolve
from clasp_pl.text.tokens import encode_captions
from clasp_pl.text.tower import TextTower

GRAPH_FORMAT_VERSION = 2  # 1: one Z per site; 2: species and occupancies per site (CSR)
FEATURE_ROW_FORMAT = 2  # 1: features only; 2: features and a per-row validity flag
VALID = "valid"
"""The per-row validity field of a feature-row store."""
IndexedLines = Sequence[tuple[int, str]]  # a shard's inputs: (record_index, record_json)

log = rank_zero_logger(__name__)


class RecordSource:
    """The records a store is computed from.

    Attributes:
        fingerprint: the source fingerprint of stores built from these lines (the records
            file's sha256, with the keywords file's appended when one was applied).
    """

    def __init__(self, lines: Sequence[str] | Callable[[], Sequence[str]], fingerprint: str):
        self._lines = lines
        self.fingerprint = fingerprint

    @functools.cached_property
    def lines(self) -> Sequence[str]:
        """One JSON record per line, in records-file order (a line's position is its
        ``record_index``). A source made with a loader reads them on first use only: a store
        that is already complete never needs them, so opening a full cache (every rank of a
        DDP run) does not hold the records in memory."""
        return self._lines() if callable(self._lines) else self._lines

    @classmethod
    def read(cls, path: str | Path) -> RecordSource:
        """The lines of a records file (read when first needed) and the sha256 of its bytes."""
        return cls(lambda: list(iter_record_lines(path)), file_fingerprint(path))


def log_rejects(rejects: Sequence[Reject], store: str) -> None:
    """One message per record a store rejected: its id, source, reason and message."""
    for reject in rejects:
        log.info(
            "%s: skipped %s (%s): %s: %s",
            store,
            reject.id,
            reject.source,
            reject.reason,
            reject.message,
        )


def build_record_store(
    records: str | Path | RecordSource,
    root: str | Path,
    shard_fn: ShardFn,
    key: dict,
    desc: str,
    workers: int = 1,
    shard_size: int = 2048,
) -> tuple[ArrayStore, list[Reject]]:
    """:func:`build_store` over records: a shard's inputs are ``(record_index, record_json)``.

    The rejects of this call are logged (named by ``desc``) and returned.
    """
    if not isinstance(records, RecordSource):
        records = RecordSource.read(records)
    store, rejects = build_store(
        root,
        lambda: list(enumerate(records.lines)),
        shard_fn,
        key=key,
        source=records.fingerprint,
        shard_size=shard_size,
        workers=workers,
        desc=desc,
    )
    log_rejects(rejects, desc)
    return store, rejects


def featurize_records(
    indexed_lines: IndexedLines,
    featurize: Callable[[int, CrystalRecord], Item],
    placeholder: Item | None = None,
) -> ShardResult:
    """``featurize(record_index, record)`` for each record of a shard. A record it fails on
    becomes a ``featurization_failed`` reject, left out of the store, or stored as
    ``placeholder`` (for stores with one item per record)."""
    result = ShardResult([])
    for index, line in indexed_lines:
        record = CrystalRecord.from_json(line)
        try:
            result.items.append(featurize(index, record))
        except Exception as error:  # noqa: BLE001 - any failure of one record is a reject
            reason = "featurization_failed"
            result.rejects.append(Reject(record.source, record.id, reason, str(error)))
            if placeholder is not None:
                result.items.append(placeholder)
    return result


def _graph_item(config: GraphConfig, index: int, record: CrystalRecord) -> Item:
    """Graph item of record ``index`` (its structure as reported, disorder kept): the
    :class:`~clasp_pl.data.graphs.CrystalGraph` fields, ``record_index [1]`` and
    ``group_id [1]``."""
    graph = structure_to_graph(record.to_structure(), config)
    return {
        **vars(graph),
        "record_index": np.array([index], np.int64),
        "group_id": np.array([stable_hash64(record.group)], np.int64),
    }


def graph_shard(config: GraphConfig, indexed_lines: IndexedLines) -> ShardResult:
    """Crystal graphs of one shard of records; failures are rejects."""
    return featurize_records(indexed_lines, functools.partial(_graph_item, config))


def build_graph_store(
    records: str | Path | RecordSource,
    root: str | Path,
    config: GraphConfig,
    workers: int = 1,
    shard_size: int = 2048,
) -> tuple[ArrayStore, list[Reject]]:
    """Build or reuse the crystal-graph store of a records file.

    Keyed by the cutoff radius and neighbour count only: the stored graphs keep distances (Å),
    which the model expands into its Gaussian basis, so the basis settings do not rebuild them.
    """
    key = {
        "what": "cgcnn-graphs",
        "version": GRAPH_FORMAT_VERSION,
        "radius": config.radius,
        "max_neighbors": config.max_neighbors,
    }
    shard_fn = functools.partial(graph_shard, config)
    return build_record_store(records, root, shard_fn, key, "crystal graphs", workers, shard_size)


def feature_row_item(row: np.ndarray) -> Item:
    """The store item of one record's feature row ``[D]``: ``features [1, D]`` float32 and
    ``valid [1]`` bool, true when every value is finite (a failed record's row is all NaN)."""
    row = np.asarray(row, np.float32)
    return {"features": row[None], VALID: np.array([np.isfinite(row).all()])}


def valid_rows(store: ArrayStore) -> np.ndarray:
    """``[N]`` bool: which rows of a feature-row store (:func:`feature_row_item`) are usable,
    read from the validity field alone (``N`` bytes, never the ``[N, D]`` features)."""
    return store.field(VALID).astype(bool)


def _composition_item(symprec: float, index: int, record: CrystalRecord) -> Item:
    """Descriptor item of a record (:func:`feature_row_item` of ``[COMPOSITION_DIM]``)."""
    return feature_row_item(composition_features(record.to_structure(), symprec))


def composition_shard(symprec: float, indexed_lines: IndexedLines) -> ShardResult:
    """Descriptors ``[1, COMPOSITION_DIM]`` of one shard of records, one item per record; a
    record whose descriptor fails is a reject stored as all NaN (not valid)."""
    placeholder = feature_row_item(np.full(COMPOSITION_DIM, np.nan, np.float32))
    return featurize_records(
        indexed_lines, functools.partial(_composition_item, symprec), placeholder
    )


def build_composition_store(
    records: str | Path | RecordSource,
    root: str | Path,
    symprec: float = 0.1,
    workers: int = 1,
    shard_size: int = 2048,
) -> tuple[ArrayStore, list[Reject]]:
    """Build or reuse the store of composition/symmetry descriptors (composition-only baseline),
    one ``[1, COMPOSITION_DIM]`` item per record; returns it and this call's rejects."""
    key = {
        "what": "composition-features",
        "version": COMPOSITION_FORMAT_VERSION,
        "row_format": FEATURE_ROW_FORMAT,
        "dim": COMPOSITION_DIM,
        "symprec": symprec,
    }
    shard_fn = functools.partial(composition_shard, symprec)
    desc = "composition features"
    return build_record_store(records, root, shard_fn, key, desc, workers, shard_size)


class _TokenShard:
    """Tokenizes shards of records' captions with a lazily loaded tokenizer."""

    def __init__(self, text_model: str, caption_fields: Sequence[str], max_length: int):
        self.text_model = text_model
        self.caption_fields = tuple(caption_fields)
        self.max_length = max_length

    @functools.cached_property
    def tokenizer(self):
        return load_tokenizer(self.text_model)

    def token_ids(self, indexed_lines: IndexedLines) -> list[np.ndarray]:
        """Unpadded int32 token ids of each record's caption."""
        captions = [
            compose_caption(CrystalRecord.from_json(line), self.caption_fields)
            for _, line in indexed_lines
        ]
        return encode_captions(self.tokenizer, captions, self.max_length)

    def __call__(self, indexed_lines: IndexedLines) -> ShardResult:
        return ShardResult([{"input_ids": ids} for ids in self.token_ids(indexed_lines)])


def _caption_key(caption_fields: Sequence[str], max_length: int) -> dict:
    """The part of a caption store's key that says which captions it holds."""
    return {
        "caption_format": CAPTION_FORMAT_VERSION,
        "caption_fields": list(caption_fields),
        "max_length": max_length,
    }


def build_token_store(
    records: str | Path | RecordSource,
    root: str | Path,
    text_model: str,
    caption_fields: Sequence[str],
    max_length: int,
    shard_size: int = 8192,
) -> ArrayStore:
    """Build or reuse the caption-token store of a records file (one item per record)."""
    tokenizer = load_tokenizer(text_model)
    key = {
        "what": "caption-tokens",
        "text_model": resolve(text_model),
        "vocab_size": tokenizer.vocab_size,
        "tokenizer_class": type(tokenizer).__name__,
        **_caption_key(caption_fields, max_length),
    }
    shard_fn = _TokenShard(text_model, caption_fields, max_length)
    store, _ = build_record_store(records, root, shard_fn, key, "captions", 1, shard_size)
    return store


class _TextFeatureShard(_TokenShard):
    """Runs a frozen text tower over shards of captions: one ``[1, H]`` item per record."""

    def __init__(
        self, features: FrozenTextFeatures, caption_fields: Sequence[str], max_length: int
    ):
        super().__init__(features.text_model_name, caption_fields, max_length)
        self.features = features

    def __call__(self, indexed_lines: IndexedLines) -> ShardResult:
        rows = self.features(self.token_ids(indexed_lines), self.tokenizer.pad_token_id or 0)
        return ShardResult([{"features": row[None]} for row in rows])


def build_text_feature_store(
    records: str | Path | RecordSource,
    root: str | Path,
    tower: TextTower,
    caption_fields: Sequence[str],
    max_length: int,
    batch_size: int = 128,
    shard_size: int = 2048,
) -> ArrayStore:
    """Build or reuse the store of a frozen text tower's pooled outputs, one ``[1, H]`` item per
    record, keyed by the tower's weights fingerprint, pooling, caption fields and max_length."""
    features = FrozenTextFeatures(tower, batch_size)
    key = {
        "what": "frozen-text-features",
        **features.identity(),
        **_caption_key(caption_fields, max_length),
    }
    shard_fn = _TextFeatureShard(features, caption_fields, max_length)
    store, _ = build_record_store(
        records, root, shard_fn, key, "frozen text features", 1, shard_size
    )
    return store


class _TextHiddenShard(_TokenShard):
    """Runs a text tower's frozen lower layers over shards of captions: one ``[n_tokens, H]``
    item per record."""

    def __init__(self, lower: FrozenLowerLayers, caption_fields: Sequence[str], max_length: int):
        super().__init__(lower.text_model_name, caption_fields, max_length)
        self.lower = lower

    def __call__(self, indexed_lines: IndexedLines) -> ShardResult:
        states = self.lower(self.token_ids(indexed_lines), self.tokenizer.pad_token_id or 0)
        return ShardResult([{"features": one} for one in states])


def build_text_hidden_store(
    records: str | Path | RecordSource,
    root: str | Path,
    tower: TextTower,
    caption_fields: Sequence[str],
    max_length: int,
    dtype: HiddenDtype = "float32",
    batch_size: int = 128,
    shard_size: int = 2048,
) -> ArrayStore:
    """Build or reuse the store of a partly trainable text tower's hidden states after its
    frozen lower layers, one ``[n_tokens, H]`` item per record (``n_tokens`` as in the token
    store), keyed by the model, the layer cut, the lower weights' fingerprint, the dtype, the
    caption fields and max_length."""
    lower = FrozenLowerLayers(tower, batch_size, dtype)
    key = {
        "what": "text-lower-hidden-states",
        **lower.identity(),
        **_caption_key(caption_fields, max_length),
    }
    shard_fn = _TextHiddenShard(lower, caption_fields, max_length)
    store, _ = build_record_store(
        records, root, shard_fn, key, "text lower-layer states", 1, shard_size
    )
    return store
