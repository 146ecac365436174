"""LightningDataModule: records file -> cached graphs/tokens -> split by paper -> batches."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Dataset

from clasp_pl.config_utils import as_config
from clasp_pl.data.batch import PairBatch, collate_pairs
from clasp_pl.data.cache import ArrayStore, file_fingerprint, remembered_fingerprint
from clasp_pl.data.caption_mixing import CaptionMixingLoader, WithStructureCaptions
from clasp_pl.data.captions import StructureCaptionStores, build_structure_caption_stores
from clasp_pl.data.chgnet_features import build_chgnet_feature_store
from clasp_pl.data.featurize import (
    RecordSource,
    build_composition_store,
    build_graph_store,
    build_text_feature_store,
    build_text_hidden_store,
    build_token_store,
    valid_rows,
)
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.loading import ResumableDataLoader
from clasp_pl.data.records import CrystalRecord, iter_record_lines
from clasp_pl.data.split import split_indices
from clasp_pl.data.text import CAPTION_FIELDS
from clasp_pl.errors import UserError
from clasp_pl.rank_zero import rank_zero_logger
from clasp_pl.resources import DEFAULT_CACHE_DIR, DEFAULT_RECORDS
from clasp_pl.text.config import TextConfig
from clasp_pl.text.features import HiddenDtype
from clasp_pl.text.sources import load_tokenizer
from clasp_pl.text.tokens import empty_caption_length
from clasp_pl.text.tower import TextTower

log = rank_zero_logger(__name__)

FEATURE_ROW_STORES = {
    "composition_features": "composition features",
    "chgnet_features": "CHGNet features",
}
"""Per-record stores of one feature row per record (NaN, not valid, where featurizing failed):
a pair whose row is not valid is left out. Named by their batch field."""


RECORDS_FINGERPRINT = "records-sha256.json"
"""The records file's remembered sha256 in its cache folder (:func:`remembered_fingerprint`)."""


def records_cache_root(cache_dir: str | Path, records: str | Path) -> Path:
    """The cache folder of a records file: ``<cache_dir>/<name>-<hash>``, its file name without
    ``.jsonl``/``.gz`` and 8 hex digits of the sha256 of its resolved absolute path, so records
    files of one name in different folders (or ``cod`` and ``cod.v2``) never share a cache."""
    records = Path(records)
    name = records.name.removesuffix(".gz").removesuffix(".jsonl")
    digest = hashlib.sha256(str(records.resolve()).encode()).hexdigest()[:8]
    return Path(cache_dir) / f"{name}-{digest}"


class RecordsFileError(UserError, FileNotFoundError):
    """A records file that is not there."""

    kind = "records file"


class RecordLines(NamedTuple):
    """The records of a data module, read once for all its stores.

    Attributes:
        lines: the records as JSON lines (with the keywords file applied), in file order.
        structures: fingerprint of the structures (the records file's sha256).
        text: fingerprint of the captions (the records file's and the keywords file's).
    """

    lines: list[str]
    structures: str
    text: str


class PairIds(NamedTuple):
    """What a pair needs of the graph store besides the graph itself, for every item.

    Attributes:
        record_index: ``[N]`` int64 record of each graph-store item.
        group_id: ``[N]`` int64 paper of each graph-store item.
    """

    record_index: np.ndarray
    group_id: np.ndarray


class CrystalTextDataset(Dataset):
    """Pairs (crystal graph, caption tokens) for the graph-store items ``item_ids``.

    ``graph_free``: the record and paper of every item, read once by the data module; given,
    samples carry no graph (``data.crystal_graphs: false``) and never read a graph's arrays.
    """

    def __init__(
        self,
        graphs: ArrayStore,
        tokens: ArrayStore,
        item_ids: np.ndarray,
        per_record: dict[str, ArrayStore] | None = None,
        graph_free: PairIds | None = None,
    ):
        self.graphs = graphs
        self.tokens = tokens
        self.per_record = per_record or {}
        self.item_ids = np.asarray(item_ids, dtype=np.int64)
        self.graph_free = graph_free

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, position: int) -> dict[str, np.ndarray]:
        item_id = int(self.item_ids[position])
        if self.graph_free is None:
            sample = dict(self.graphs[item_id])
        else:
            sample = {
                "record_index": self.graph_free.record_index[item_id : item_id + 1],
                "group_id": self.graph_free.group_id[item_id : item_id + 1],
            }
        record_index = int(sample["record_index"][0])
        sample["input_ids"] = self.tokens[record_index]["input_ids"]
        for name, store in self.per_record.items():
            sample[name] = store[record_index]["features"]
        sample["item_id"] = np.array([item_id], np.int64)
        return sample

    def site_counts(self) -> np.ndarray:
        """``[len(self)]`` int64 sites of each pair's crystal (from the store's offsets alone)."""
        return self.graphs.lengths("species_per_site")[self.item_ids]


class SplitDataModule(L.LightningDataModule):
    """A data module built from cached stores, whose train/val/test loaders differ only by split.

    Subclasses implement ``_build()`` (build or open their stores) and ``_loader(split,
    train)``. ``prepare_data`` builds the stores (local rank 0 of each node); ``setup`` opens
    them through :meth:`_stores`, which hands over what ``prepare_data`` built in this process
    instead of reading and fingerprinting the records a second time.

    Args:
        records: records file; its stores go to ``<cache_dir>/<name>-<hash>``
            (:func:`records_cache_root`).
        cache_dir: where the caches go.
        graph: crystal-graph settings.
        split_fractions: train/val/test fractions of groups (papers).
        split_seed: seed of the split.
        batch_size: training samples per process per step.
        eval_batch_size: samples per batch in validation/test/predict.
        num_workers: DataLoader workers.
        prepare_workers: processes used to featurize the caches.
    """

    _prepared: tuple | None = None
    records_hint = "make one with `clasp data ingest`"  # the end of the missing-file error

    def __init__(
        self,
        records: str,
        cache_dir: str,
        graph: GraphConfig,
        split_fractions: tuple[float, float, float],
        split_seed: int,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        prepare_workers: int,
    ):
        super().__init__()
        self.records = Path(records)
        if not self.records.is_file():
            raise RecordsFileError(self.records, "no such file", self.records_hint)
        self.cache_root = records_cache_root(cache_dir, self.records)
        self.graph = as_config(GraphConfig, graph)
        self.split_fractions = tuple(split_fractions)
        self.split_seed = split_seed
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.prepare_workers = prepare_workers

    def _build(self) -> tuple:
        raise NotImplementedError

    def _loader(self, split: str, train: bool) -> DataLoader:
        raise NotImplementedError

    def prepare_data(self) -> None:
        """Build the caches once (rank 0 of each node); later runs reuse them."""
        self._prepared = self._build()

    def _stores(self) -> tuple:
        """The stores this process's ``prepare_data`` built, once; else ``_build()`` (which
        opens caches that exist)."""
        stores, self._prepared = self._prepared, None
        return stores if stores is not None else self._build()

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


class CrystalTextDataModule(SplitDataModule):
    """Crystal-text pairs from a records file (``clasp data ingest`` or the AMCSD default).

    Args:
        records: records file (``.jsonl.gz``); defaults to the embedded AMCSD dataset.
        cache_dir: where cached graphs and tokens go (one sub-folder per records file, see
            :func:`records_cache_root`).
        text: text model settings, linked to the model's by the CLI: its tokenizer is used, and
            a frozen tower's pooled outputs are cached once when ``cache_text_features``.
        cache_text_features: cache what the frozen part of the text tower computes: for a
            frozen tower its pooled outputs (``text_features``), for one with
            ``trainable_layers`` set the hidden states after its frozen lower layers
            (``text_hidden``, the model then runs only the top layers).
        text_hidden_dtype: dtype of cached lower-layer hidden states (``float16`` halves the
            cache, ``float32`` keeps the top layers' inputs exact).
        composition_features: also serve composition/symmetry descriptors (for the
            composition-only baseline tower, ``model.crystal_encoder: composition``).
        chgnet_features: also serve frozen CHGNet crystal features ``[64]`` (for
            ``model.crystal_encoder: chgnet``; needs ``pip install clasp_pl[chgnet]``), computed
            once into ``<cache root>/chgnet`` with ``prepare_workers`` processes
            (:mod:`clasp_pl.data.chgnet_features`).
        crystal_graphs: serve the crystal graphs (false for a tower that reads only
            per-record features, the composition baseline: its steps then skip reading and
            collating graphs, ~10x faster; the graph store is still built, it holds the pairs).
        keywords: JSON of keywords per record id (``clasp data keywords`` or the official
            keyword-caption release), applied to the records; add ``keywords`` to
            ``caption_fields`` to train on keyword captions (stage 2 of the paper's recipe).
        caption_fields: record fields joined into the caption.
        max_length: caption truncation in tokens.
        graph: crystal-graph settings (cutoff radius in Å, neighbours per atom, Gaussian basis).
        split_fractions: train/val/test fractions of *papers* (groups).
        split_seed: seed of the by-paper split.
        num_folds: K for a k-fold split by paper (:func:`~clasp_pl.data.split.split_indices`:
            test = fold ``fold``, val = the share ``split_fractions[1]`` of the other papers);
            None for the ``split_fractions`` split.
        fold: the fold of a k-fold split.
        batch_size: training pairs per process per step (the most, with ``atom_budget``).
        eval_batch_size: pairs per batch in validation/test.
        num_workers: DataLoader workers.
        prepare_workers: processes used to featurize the cache.
        structure_captions: chance in [0, 1] that a training pair's text is its structure's
            caption instead of its title (:mod:`clasp_pl.data.caption_mixing`); 0 = titles only.
            Validation and test always use titles.
        atom_budget: pack training batches to at most this many sites per process
            (:class:`~clasp_pl.data.loading.AtomBudgetBatchSampler`: bounded memory under a wide
            size distribution, equal batch sizes across ranks); ``None``: ``batch_size`` pairs.
    """

    records_hint = "make one with `clasp data ingest`, or leave data.records unset for the default"
    structure_caption_stores: StructureCaptionStores | None = None  # set by _build when mixing

    def __init__(
        self,
        records: str = DEFAULT_RECORDS,
        cache_dir: str = DEFAULT_CACHE_DIR,
        text: TextConfig = TextConfig(),
        cache_text_features: bool = True,
        text_hidden_dtype: HiddenDtype = "float32",
        composition_features: bool = False,
        chgnet_features: bool = False,
        crystal_graphs: bool = True,
        keywords: str | None = None,
        caption_fields: list[str] | None = None,
        max_length: int = 256,
        graph: GraphConfig = GraphConfig(),
        split_fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
        split_seed: int = 0,
        num_folds: int | None = None,
        fold: int = 0,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        prepare_workers: int = 1,
        structure_captions: float = 0.0,
        atom_budget: int | None = None,
    ):
        if not 0.0 <= structure_captions <= 1.0:
            raise ValueError(f"data.structure_captions={structure_captions} is not in [0, 1]")
        if caption_fields is None:
            caption_fields = list(CAPTION_FIELDS)
        super().__init__(
            records,
            cache_dir,
            graph,
            split_fractions,
            split_seed,
            batch_size,
            eval_batch_size,
            num_workers,
            prepare_workers,
        )
        self.save_hyperparameters()  # stored in checkpoints: evaluation rebuilds the same split
        self.text = as_config(TextConfig, text)
        self.cache_text_features = cache_text_features
        self.text_hidden_dtype: HiddenDtype = text_hidden_dtype
        self.text_hidden_key: dict | None = None  # the lower-layer cache's key, after setup
        self.composition_features = composition_features
        self.chgnet_features = chgnet_features
        self.crystal_graphs = crystal_graphs
        self.keywords = keywords
        self.caption_fields = list(caption_fields)
        self.max_length = max_length
        self.num_folds = num_folds
        self.fold = fold
        self.structure_captions = structure_captions
        self.atom_budget = atom_budget
        self.datasets: dict[str, CrystalTextDataset] = {}
        self.pad_token_id = 0

    @property
    def uses_text_features(self) -> bool:
        return self.text.freeze and self.cache_text_features

    @property
    def uses_text_hidden(self) -> bool:
        """Serve cached hidden states of the text tower's frozen lower layers."""
        return (
            not self.text.freeze
            and self.text.trainable_layers is not None
            and self.cache_text_features
        )

    def record_fingerprints(self) -> tuple[str, str]:
        """The fingerprint of the structures (the records file's sha256) and that of the text
        (records file + keywords file)."""
        structures = remembered_fingerprint(self.records, self.cache_root / RECORDS_FINGERPRINT)
        if not self.keywords:
            return structures, structures
        return structures, structures + ":" + file_fingerprint(self.keywords)

    def read_lines(self) -> list[str]:
        """The records (with the keywords file applied) as JSON lines, in file order.

        With a keywords file, logs how many records it matched and warns when none."""
        lines = list(iter_record_lines(self.records))
        if self.keywords:
            from clasp_pl.data.keywords import apply_keyword_file

            records = [CrystalRecord.from_json(line) for line in lines]
            lines = [record.to_json() for record in apply_keyword_file(records, self.keywords)]
        return lines

    def record_lines(self) -> RecordLines:
        """:meth:`read_lines` and :meth:`record_fingerprints` together."""
        return RecordLines(self.read_lines(), *self.record_fingerprints())

    def _build(self) -> tuple[ArrayStore, ArrayStore, dict[str, ArrayStore]]:
        structure_source, text_source = self.record_fingerprints()
        lines = functools.cache(self.read_lines)  # read only if some store must be built
        structures = RecordSource(lines, structure_source)
        texts = RecordSource(lines, text_source)
        root, workers = self.cache_root, self.prepare_workers
        graphs, _ = build_graph_store(structures, root / "graphs", self.graph, workers)
        captions = (self.caption_fields, self.max_length)
        tokens = build_token_store(texts, root / "tokens", self.text.model, *captions)
        per_record = {}
        if self.uses_text_features:
            per_record["text_features"] = build_text_feature_store(
                texts, root / "text_features", TextTower(self.text), *captions
            )
        if self.uses_text_hidden:
            per_record["text_hidden"] = build_text_hidden_store(
                texts, root / "text_hidden", TextTower(self.text), *captions, self.text_hidden_dtype
            )
        if self.composition_features:
            per_record["composition_features"], _ = build_composition_store(
                structures, root / "composition", workers=workers
            )
        if self.chgnet_features:
            per_record["chgnet_features"], _ = build_chgnet_feature_store(
                structures, root / "chgnet", workers=workers
            )
        if self.structure_captions > 0:
            self.structure_caption_stores = build_structure_caption_stores(
                structures,
                root / "structure_captions",
                self.text.model,
                self.max_length,
                TextTower(self.text) if self.uses_text_features else None,
                workers=workers,
            )
        return graphs, tokens, per_record

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        graphs, tokens, per_record = self._stores()
        if "text_hidden" in per_record:
            self.text_hidden_key = per_record["text_hidden"].manifest["key"]
        tokenizer = load_tokenizer(self.text.model)
        self.pad_token_id = tokenizer.pad_token_id or 0
        record_index = graphs.field("record_index")
        no_text_length = empty_caption_length(tokenizer, self.max_length)  # special tokens only
        usable = tokens.lengths("input_ids")[record_index] > no_text_length
        if not usable.all():
            log.info(
                "%d structures have no caption text and are left out of pairs", (~usable).sum()
            )
        for name, what in FEATURE_ROW_STORES.items():  # failed rows are stored as NaN
            if name in per_record:
                valid = valid_rows(per_record[name])[record_index]
                if not valid.all():
                    log.info("%d structures have no %s; left out of pairs", (~valid).sum(), what)
                usable &= valid
        group_id = graphs.field("group_id")
        parts = split_indices(
            group_id,
            self.split_fractions,
            self.split_seed,
            self.num_folds,
            self.fold,
        )
        graph_free = None if self.crystal_graphs else PairIds(record_index, group_id)
        self.datasets = {
            name: CrystalTextDataset(graphs, tokens, ids[usable[ids]], per_record, graph_free)
            for name, ids in parts.items()
        }

    def _loader(self, split: str, train: bool) -> DataLoader:
        options = {
            "num_workers": self.num_workers,
            "collate_fn": self._collate,
            "persistent_workers": self.num_workers > 0,
        }
        dataset = self.datasets[split]
        if train and self.atom_budget is not None:
            options["atom_budget"] = self.atom_budget
            options["sites"] = dataset.site_counts()
        if train and self.structure_caption_stores is not None:  # titles mixed with captions
            captioned = WithStructureCaptions(dataset, self.structure_caption_stores)
            del options["collate_fn"]
            probability, pad = self.structure_captions, self.pad_token_id
            return CaptionMixingLoader(captioned, self.batch_size, probability, pad, **options)
        if train:  # full batches in an order set by (seed, epoch), resumable mid-epoch
            return ResumableDataLoader(dataset, self.batch_size, **options)
        return DataLoader(self.datasets[split], batch_size=self.eval_batch_size, **options)

    def _collate(self, samples: Sequence[dict]) -> PairBatch:
        return collate_pairs(samples, self.pad_token_id)
