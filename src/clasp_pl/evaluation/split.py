"""The evaluated split: a checkpoint's own data module, and the embeddings of one split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.records import CrystalRecord
from clasp_pl.data.text import CAPTION_FIELDS, compose_caption
from clasp_pl.evaluation.metrics import BidirectionalRanks, bidirectional_ranks
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.search.lexical import LexicalIndex


@dataclass
class PairEmbeddings:
    """Embeddings of the structure-text pairs of one split, aligned row by row.

    Attributes:
        crystal: ``[N, D]`` structure embeddings; text: ``[N, D]`` caption embeddings.
        groups: ``[N]`` paper ids.
        record_index: ``[N]`` row of each pair's record in the records file.
    """

    crystal: Tensor
    text: Tensor
    groups: Tensor
    record_index: Tensor

    def ranks(self) -> BidirectionalRanks:
        """Pair and group ranks of the learned cosine similarity, in both directions."""
        return bidirectional_ranks(self.crystal, self.text, self.groups)


@dataclass
class SplitEmbeddings(PairEmbeddings):
    """:class:`PairEmbeddings` with the pairs' records and captions.

    Attributes:
        records: the N records (structure, text fields, metadata, keywords file applied).
        captions: the N captions the text embeddings encode.
    """

    records: list[CrystalRecord]
    captions: list[str]


def load_datamodule(
    data_settings: Mapping[str, Any],
    caption_fields: Sequence[str] | None = None,
    keywords: str | None = None,
) -> CrystalTextDataModule:
    """The data module a checkpoint was trained with (its ``data_settings``), set up (caches
    are reused when present).

    ``caption_fields`` evaluates on other captions of the same records and split (e.g. titles
    for a model fine-tuned on keyword captions); ``keywords`` applies another keywords file."""
    settings = dict(data_settings)
    if caption_fields:
        settings["caption_fields"] = list(caption_fields)
    if keywords:
        settings["keywords"] = keywords
    datamodule = CrystalTextDataModule(**settings)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def uses_own_captions(
    data_settings: Mapping[str, Any], caption_fields: Sequence[str] | None
) -> bool:
    """Whether ``caption_fields`` (None: the checkpoint's own) are the captions of the
    checkpoint whose data settings are ``data_settings``."""
    if not caption_fields:
        return True
    own = data_settings.get("caption_fields") or CAPTION_FIELDS
    return list(caption_fields) == list(own)


@torch.no_grad()
def embed_pairs(
    model: CLaSPModule, datamodule: CrystalTextDataModule, split: str
) -> PairEmbeddings:
    """Run ``model`` (put in eval mode) over the ``val`` or ``test`` split of ``datamodule``."""
    model.eval()
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    crystal, text, groups, record_index = [], [], [], []
    for batch in tqdm(loader, desc=f"embedding {split}", leave=False):
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        c, t = model(batch)
        crystal.append(c.cpu())
        text.append(t.cpu())
        groups.append(batch["group_ids"].cpu())
        record_index.append(batch["record_index"].cpu())
    return PairEmbeddings(
        torch.cat(crystal), torch.cat(text), torch.cat(groups), torch.cat(record_index)
    )


def embed_split(
    model: CLaSPModule, datamodule: CrystalTextDataModule, split: str, lines: Sequence[str]
) -> SplitEmbeddings:
    """:func:`embed_pairs`, with the split's records and captions.

    Args:
        lines: the data module's records as JSON lines, keywords file applied
            (``datamodule.record_lines()[0]``), indexed by the batches' ``record_index``.
    """
    pairs = embed_pairs(model, datamodule, split)
    records = [CrystalRecord.from_json(lines[i]) for i in pairs.record_index.tolist()]
    captions = [compose_caption(r, datamodule.caption_fields) for r in records]
    return SplitEmbeddings(**vars(pairs), records=records, captions=captions)


def split_lexical_index(split: SplitEmbeddings) -> LexicalIndex:
    """Lexical index over the compositions of the split's structures."""
    return LexicalIndex([r.composition for r in split.records])


def split_lexical_scores(split: SplitEmbeddings) -> Tensor:
    """``[N texts, N structures]`` formula/element match of each caption with each structure."""
    return split_lexical_index(split).scores(split.captions)
