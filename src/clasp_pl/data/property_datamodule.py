"""LightningDataModule for property prediction: records + one target -> cached graphs -> batches.

The target of a record is either a number stored in its ``meta`` by ingestion (e.g. perov_5's
``heat_ref``, the formation heat in eV/atom) -- a regression target -- or a class computed from
the structure (:data:`~clasp_pl.data.labels.CLASS_TARGETS`): ``crystal_system`` (7 classes) or
``mineral_class`` (9 Nickel–Strunz-style chemical classes) -- a classification target.

Caches live next to the pretraining caches of the same records file (in its folder
:func:`~clasp_pl.data.datamodule.records_cache_root`): crystal graphs are the very same
``graphs/`` store that :func:`~clasp_pl.data.featurize.build_graph_store` builds for
pretraining, and each target gets its own store ``targets/<target>/`` (one float64 value per
record, NaN when the record has no such value or its symmetry analysis failed), keyed by the
target name and the records file's fingerprint, so it is recomputed only when one of them
changes. Records without a target value are left out of every split.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from clasp_pl.data.batch import PropertyBatch, collate_graphs
from clasp_pl.data.cache import ArrayStore, Item, ShardResult
from clasp_pl.data.datamodule import SplitDataModule
from clasp_pl.data.featurize import (
    IndexedLines,
    RecordSource,
    build_graph_store,
    build_record_store,
    featurize_records,
)
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.labels import CLASS_TARGETS, CRYSTAL_SYSTEM, SYMPREC
from clasp_pl.data.records import CrystalRecord, iter_record_lines
from clasp_pl.data.split import split_indices
from clasp_pl.rank_zero import rank_zero_logger
from clasp_pl.resources import DEFAULT_CACHE_DIR, DEFAULT_RECORDS

TARGET_FORMAT_VERSION = 1
Task = Literal["regression", "classification"]
_NO_TARGET = {"value": np.array([math.nan], np.float64)}

log = rank_zero_logger(__name__)


def task_of(target: str) -> Task:
    """``classification`` for a :data:`CLASS_TARGETS` name, ``regression`` for a ``meta`` key."""
    return "classification" if target in CLASS_TARGETS else "regression"


def num_classes_of(target: str) -> int:
    """Number of classes of a classification target; 1 (one output) for a regression target."""
    return len(CLASS_TARGETS[target].classes) if target in CLASS_TARGETS else 1


def target_value(record: CrystalRecord, target: str) -> float:
    """The target of one record: its class index for a classification target, else
    ``meta[target]`` as a float; NaN when missing, not a number, or without a class."""
    if target in CLASS_TARGETS:
        index = CLASS_TARGETS[target].label(record)
        return math.nan if index is None else float(index)
    value = record.meta.get(target)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _target_item(target: str, index: int, record: CrystalRecord) -> Item:
    return {"value": np.array([target_value(record, target)], np.float64)}


def target_shard(target: str, indexed_lines: IndexedLines) -> ShardResult:
    """Target values ``[1]`` (float64) of one shard of records; a record whose value cannot be
    computed is a reject stored as NaN."""
    return featurize_records(indexed_lines, functools.partial(_target_item, target), _NO_TARGET)


def build_target_store(
    records: str | Path | RecordSource,
    root: str | Path,
    target: str,
    workers: int = 1,
    shard_size: int = 2048,
) -> ArrayStore:
    """Build or reuse the store of one target's values, one item per record (records order)."""
    key = {"what": "property-target", "version": TARGET_FORMAT_VERSION, "target": target}
    if target in CLASS_TARGETS:
        key["classes"] = list(CLASS_TARGETS[target].classes)
    if target == CRYSTAL_SYSTEM:
        key["symprec"] = SYMPREC
    shard_fn = functools.partial(target_shard, target)
    store, _ = build_record_store(
        records, root, shard_fn, key, f"target {target}", workers, shard_size
    )
    return store


class PropertyDataset(Dataset):
    """Crystal graphs (graph-store items ``item_ids``): the samples of
    :meth:`PropertyDataModule.collate`."""

    def __init__(self, graphs: ArrayStore, item_ids: np.ndarray):
        self.graphs = graphs
        self.item_ids = np.asarray(item_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getitem__(self, position: int) -> dict[str, np.ndarray]:
        return self.graphs[int(self.item_ids[position])]


class PropertyDataModule(SplitDataModule):
    """(crystal graph, target) pairs from a records file, split by ``group`` (paper).

    Structure-only tables (perov_5) have ``group = "id:<id>"``, so their split is per structure.

    Args:
        records: records file (``.jsonl.gz``), e.g. from ``clasp data ingest --table``.
        target: a numeric key of ``record.meta`` (regression, e.g. ``heat_ref`` in eV/atom) or
            a class target, ``crystal_system`` (7 classes) or ``mineral_class`` (9 classes).
        cache_dir: where cached graphs and targets go (one sub-folder per records file).
        graph: crystal-graph settings (cutoff radius in Å, neighbours per atom, Gaussian basis).
        split_fractions: train/val/test fractions of groups.
        split_seed: seed of the split.
        batch_size: training crystals per step.
        eval_batch_size: crystals per batch in validation/test/predict.
        num_workers: DataLoader workers.
        prepare_workers: processes used to featurize the caches.
    """

    def __init__(
        self,
        records: str = DEFAULT_RECORDS,
        target: str = CRYSTAL_SYSTEM,
        cache_dir: str = DEFAULT_CACHE_DIR,
        graph: GraphConfig = GraphConfig(),
        split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
        split_seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        prepare_workers: int = 1,
    ):
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
        self.target = target
        self.task: Task = task_of(target)
        self.datasets: dict[str, PropertyDataset] = {}
        self.targets = np.zeros(0)

    def _build(self) -> tuple[ArrayStore, ArrayStore]:
        records, root, workers = (
            RecordSource.read(self.records),
            self.cache_root,
            self.prepare_workers,
        )
        graphs, _ = build_graph_store(records, root / "graphs", self.graph, workers)
        targets = build_target_store(records, root / "targets" / self.target, self.target, workers)
        return graphs, targets

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        graphs, targets = self._stores()
        self.targets = targets.field("value")  # [n_records], NaN = no target
        record_index = graphs.field("record_index")
        labelled = np.isfinite(self.targets[record_index])
        if not labelled.any():
            raise ValueError(
                f"no record of {self.records} has a numeric meta[{self.target!r}]; "
                f"meta keys of the first record: {self._first_meta_keys()}"
            )
        if not labelled.all():
            log.info("%d structures have no %s and are left out", (~labelled).sum(), self.target)
        parts = split_indices(graphs.field("group_id"), self.split_fractions, self.split_seed)
        self.datasets = {
            name: PropertyDataset(graphs, ids[labelled[ids]]) for name, ids in parts.items()
        }

    def _first_meta_keys(self) -> list[str]:
        first = next(iter(iter_record_lines(self.records)))
        return sorted(CrystalRecord.from_json(first).meta)

    def labelled_dataset(self) -> PropertyDataset:
        """Every labelled structure of every split, in records order (for cross-validation)."""
        item_ids = np.sort(np.concatenate([d.item_ids for d in self.datasets.values()]))
        return PropertyDataset(self.datasets["train"].graphs, item_ids)

    def targets_of(self, dataset: PropertyDataset) -> np.ndarray:
        """Targets ``[n]`` of a dataset (eV/atom etc. for regression, class indices otherwise)."""
        return self.targets[dataset.graphs.field("record_index")[dataset.item_ids]]

    def split_targets(self, split: str) -> np.ndarray:
        """Targets ``[n]`` of a split (eV/atom etc. for regression, class indices otherwise)."""
        return self.targets_of(self.datasets[split])

    def target_stats(self) -> tuple[float, float]:
        """Mean and standard deviation of the training targets (in the target's units)."""
        train = self.split_targets("train")
        return float(train.mean()), float(max(train.std(), 1e-8))

    def collate(self, samples: Sequence[dict]) -> PropertyBatch:
        """A :class:`~clasp_pl.data.batch.PropertyBatch`: the graphs, their ``record_index``
        and their ``targets`` (float32 in the target's units, or int64 class indices)."""
        record_index = np.concatenate([s["record_index"] for s in samples])
        dtype = np.int64 if self.task == "classification" else np.float32
        return PropertyBatch(
            **collate_graphs(samples),
            record_index=torch.from_numpy(record_index),
            targets=torch.from_numpy(self.targets[record_index].astype(dtype)),
        )

    def _loader(self, split: str, train: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train and len(self.datasets[split]) > self.batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            persistent_workers=self.num_workers > 0,
        )

    def predict_dataloader(self) -> DataLoader:
        """Predictions are made for the test split."""
        return self._loader("test", train=False)
