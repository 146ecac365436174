"""The baselines of the retrieval report, on the evaluated split.

- random ranking: the expected metrics, analytically (:func:`random_row`);
- the same architecture untrained (seeded initialisation, :func:`untrained_ranks`);
- lexical formula/element matching alone (:func:`lexical_ranks`);
- the composition-only tower (same text tower, heads, loss and budget), when its checkpoint
  exists and was trained on the same records and split (:func:`find_composition_baseline`,
  :func:`composition_ranks`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clasp_pl.api import load_model
from clasp_pl.checkpoints import find_checkpoint, read_settings
from clasp_pl.data.cache import file_fingerprint
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.evaluation.hybrid import hybrid_ranks
from clasp_pl.evaluation.metrics import BidirectionalRanks, group_sizes, random_expectation
from clasp_pl.evaluation.split import SplitEmbeddings, embed_pairs, load_datamodule
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.resources import DEFAULT_RECORDS

logger = logging.getLogger(__name__)

COMPOSITION_RUN = Path("runs/composition")
COMPOSITION_ROW = "composition-only (same text tower, heads, loss, budget)"


class DifferentSplitError(ValueError):
    """A baseline checkpoint's split holds other records than the evaluated checkpoint's."""


def random_row(groups: torch.Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Expected metrics of a random ranking of the split whose paper ids are ``groups [N]``."""
    return random_expectation(len(groups), group_sizes(groups), ks)


def untrained_ranks(
    model_settings: Mapping[str, Any],
    device: torch.device,
    datamodule: CrystalTextDataModule,
    split: str,
    seed: int,
) -> BidirectionalRanks:
    """Ranks of the checkpoint's architecture (``model_settings``) freshly initialised from
    ``seed``, on ``device``."""
    torch.manual_seed(seed)
    settings = {**model_settings, "init_from": None}  # older checkpoints kept it: load nothing
    return embed_pairs(CLaSPModule(**settings).to(device), datamodule, split).ranks()


def lexical_ranks(split: SplitEmbeddings, lexical: torch.Tensor) -> BidirectionalRanks:
    """Ranks of the lexical formula/element match alone, ``lexical [N, N]`` of the split's
    captions and structures (:func:`~clasp_pl.evaluation.split.split_lexical_scores`)."""
    return hybrid_ranks(split, lexical, 1.0, learned=False)


@dataclass(frozen=True)
class CompositionBaseline:
    """A composition-only checkpoint to compare with.

    Attributes:
        ckpt: the checkpoint file.
        required: named by the user (a different split is an error, not a warning).
    """

    ckpt: Path
    required: bool


def find_composition_baseline(
    ckpt: Path, explicit: Path | None, run: Path | None
) -> CompositionBaseline | None:
    """The composition-only baseline: ``explicit`` (named by the user), else the last
    checkpoint under ``run`` (a note when there is none). None when there is none, or when it
    is the evaluated checkpoint ``ckpt`` itself."""
    if explicit is not None:
        found = explicit
    elif run is not None and any(run.rglob("*.ckpt")):
        found = find_checkpoint(run)
    else:
        if run is not None:
            logger.info(
                "note: no checkpoint under %s/ (make pretrain-composition adds its row)", run
            )
        return None
    if found.resolve() == ckpt.resolve():
        logger.info("note: %s is the evaluated checkpoint; no composition-only row", found)
        return None
    return CompositionBaseline(found, explicit is not None)


def check_same_records(ckpt: Path, records: Path, data: CrystalTextDataModule, sha256: str) -> None:
    """Raise :class:`DifferentSplitError` unless checkpoint ``ckpt``, trained on the records
    file ``records``, was trained on the same content as ``data`` (whose records file has the
    fingerprint ``sha256``). Hashes ``records`` only when it is another file."""
    same = records.is_file() and (
        records.resolve() == data.records.resolve() or file_fingerprint(records) == sha256
    )
    if not same:
        raise DifferentSplitError(
            f"{ckpt} was trained on {records}, not on {data.records}; cannot compare"
        )


def composition_ranks(
    baseline: CompositionBaseline,
    reference: SplitEmbeddings,
    split: str,
    device: str,
    data: CrystalTextDataModule,
    records_sha256: str,
) -> BidirectionalRanks | None:
    """Ranks of the baseline checkpoint on the split of ``reference`` (its records, keywords
    file and captions: those of ``data``, whose records file has the fingerprint
    ``records_sha256``), checked before featurizing anything.

    A baseline found automatically (not ``required``) whose records or split differ is left out
    with a warning (None) instead of stopping the evaluation.

    Raises:
        DifferentSplitError: when a required baseline was trained on other records, or its
            split holds other records than ``reference``.
    """
    try:
        settings = read_settings(baseline.ckpt)
        data_settings = settings.require_data()
        records = Path(data_settings.get("records") or DEFAULT_RECORDS)
        check_same_records(baseline.ckpt, records, data, records_sha256)
        model = load_model(baseline.ckpt, device, settings)
        baseline_data = load_datamodule(data_settings, data.caption_fields, data.keywords)
        pairs = embed_pairs(model, baseline_data, split)
        # the same records and keywords file: equal record rows are the same records
        if not torch.equal(pairs.record_index, reference.record_index):
            raise DifferentSplitError(
                f"{baseline.ckpt} was trained on another split or dataset; cannot compare"
            )
    except DifferentSplitError as error:
        if baseline.required:
            raise
        logger.warning("warning: %s; its row is left out", error)
        return None
    return pairs.ranks()
