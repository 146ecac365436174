"""Mixing structure captions into training pairs: which pair gets one, and the batch it makes.

With ``data.structure_captions = p``, each training pair's text is, with probability ``p``, its
structure's caption (:mod:`clasp_pl.data.captions`) instead of its title. The draw is a hash of
``(seed, epoch, item_id)`` (:func:`caption_draws`): the same for every process and worker,
independent of batch composition and of where in the epoch a run resumed, so DDP and exact
resume stay exact. Validation and test always use titles.

Positives. The loss takes one group id per pair and treats equal ids as mutual positives. A
caption pair keeps its *caption* group id (:func:`~clasp_pl.data.captions.caption_group_id`:
equal for captions naming the same mineral, formula and space group), not its paper's:

- with the paper's id, "calcite, CaCO3 ... R-3c" would be a positive of every structure of its
  paper that shares the batch, a magnesite or a high-pressure phase too, teaching the caption's
  formula and space group the wrong structure. A caption states one structure's facts;
- with its own id, a caption pair is no positive of its paper's title pairs in the batch: the
  structure with a caption this step is a negative of its paper-mates' titles (which equal its
  own title). That happens only when a paper-mate shares the batch (a batch of 128 out of ~7,600
  training pairs) and only in that step, and a title pair keeps its paper's positives;
- two captions of the same material (another paper's calcite, the same mineral at another
  temperature) share an id, so identical descriptions are never told apart as negatives.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from clasp_pl.data.batch import PairBatch, Sample, collate_pairs
from clasp_pl.data.captions import NO_CAPTION, StructureCaptionStores
from clasp_pl.data.loading import ResumableDataLoader
from clasp_pl.data.records import stable_hash64
from clasp_pl.text.tokens import pad_token_ids

# The caption fields a captioned sample and batch carry besides a pair's (title) fields.
CAPTION_INPUT_IDS = "caption_input_ids"
CAPTION_ATTENTION_MASK = "caption_attention_mask"
CAPTION_GROUP_ID = "caption_group_id"
CAPTION_TEXT_FEATURES = "caption_text_features"
_CAPTION_KEYS = (CAPTION_INPUT_IDS, CAPTION_ATTENTION_MASK, CAPTION_GROUP_ID, CAPTION_TEXT_FEATURES)


def caption_draws(seed: int, epoch: int, item_ids: np.ndarray | Tensor) -> np.ndarray:
    """``[B]`` float64 uniform draws in [0, 1), one per item, a function of ``(seed, epoch,
    item_id)`` only; a pair gets its caption when its draw is below ``p``."""
    ids = np.asarray(item_ids, dtype=np.int64).reshape(-1)
    hashes = [stable_hash64(f"structure-caption:{seed}:{epoch}:{item}") for item in ids]
    return (np.array(hashes, dtype=np.int64).view(np.uint64) >> np.uint64(11)) / float(1 << 53)


class WithStructureCaptions(Dataset):
    """A pair dataset whose samples also carry their record's structure caption.

    Adds ``caption_input_ids [n_tokens]``, ``caption_group_id [1]`` and, with cached caption
    features, ``caption_text_features [1, H]`` to each sample of ``pairs`` (whose samples have
    ``record_index [1]``).
    """

    def __init__(self, pairs: Dataset, captions: StructureCaptionStores):
        self.pairs = pairs
        self.captions = captions

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, position: int) -> dict[str, np.ndarray]:
        sample = dict(self.pairs[position])
        record_index = int(sample["record_index"][0])
        sample[CAPTION_INPUT_IDS] = self.captions.tokens[record_index]["input_ids"]
        sample[CAPTION_GROUP_ID] = self.captions.texts[record_index]["group_id"]
        if self.captions.features is not None:
            sample[CAPTION_TEXT_FEATURES] = self.captions.features[record_index]["features"]
        return sample


def collate_captioned(samples: Sequence[Sample], pad_token_id: int = 0) -> dict[str, Any]:
    """:func:`~clasp_pl.data.batch.collate_pairs` plus the caption fields: ``caption_input_ids``
    and ``caption_attention_mask [B, L']``, ``caption_group_id [B]`` and, when the samples carry
    them, ``caption_text_features [B, H]``."""
    batch: dict[str, Any] = dict(collate_pairs(samples, pad_token_id))
    ids, mask = pad_token_ids([s[CAPTION_INPUT_IDS] for s in samples], pad_token_id)
    batch[CAPTION_INPUT_IDS] = torch.from_numpy(ids)
    batch[CAPTION_ATTENTION_MASK] = torch.from_numpy(mask)
    batch[CAPTION_GROUP_ID] = torch.from_numpy(
        np.concatenate([s[CAPTION_GROUP_ID] for s in samples]).astype(np.int64)
    )
    if CAPTION_TEXT_FEATURES in samples[0]:
        features = np.concatenate([s[CAPTION_TEXT_FEATURES] for s in samples])
        batch[CAPTION_TEXT_FEATURES] = torch.from_numpy(features.astype(np.float32))
    return batch


def _rows(mask: Tensor, chosen: Tensor, other: Tensor, pad: int) -> Tensor:
    """``[B, L]`` rows of ``chosen`` where ``mask``, else of ``other`` (both right-padded with
    ``pad`` to a common ``L``)."""
    length = max(chosen.shape[1], other.shape[1])
    out = torch.full((mask.shape[0], length), pad, dtype=other.dtype)
    out[mask, : chosen.shape[1]] = chosen[mask]
    out[~mask, : other.shape[1]] = other[~mask]
    return out


def mix_captions(batch: dict[str, Any], use_caption: Tensor, pad_token_id: int = 0) -> PairBatch:
    """The :class:`~clasp_pl.data.batch.PairBatch` whose pair ``i`` is (crystal ``i``, its
    structure caption) where ``use_caption[i]`` (``[B]`` bool), else (crystal ``i``, its title):
    its tokens, attention mask, cached text features and group id (the caption's, see the module
    docstring). The caption fields are dropped, so the towers see a plain pair batch."""
    use_caption = use_caption & (batch[CAPTION_GROUP_ID] != NO_CAPTION)
    out = {key: value for key, value in batch.items() if key not in _CAPTION_KEYS}
    ids = _rows(use_caption, batch[CAPTION_INPUT_IDS], batch["input_ids"], pad_token_id)
    mask = _rows(use_caption, batch[CAPTION_ATTENTION_MASK], batch["attention_mask"], 0)
    length = int(mask.sum(dim=1).max())  # no column of padding only
    out["input_ids"], out["attention_mask"] = ids[:, :length], mask[:, :length]
    out["group_ids"] = torch.where(use_caption, batch[CAPTION_GROUP_ID], batch["group_ids"])
    if CAPTION_TEXT_FEATURES in batch:
        out["text_features"] = torch.where(
            use_caption[:, None], batch[CAPTION_TEXT_FEATURES], batch["text_features"]
        )
    return PairBatch(**out)


class CaptionMixingLoader(ResumableDataLoader):
    """The training loader over a :class:`WithStructureCaptions` dataset: a
    :class:`~clasp_pl.data.loading.ResumableDataLoader` whose batches are mixed by
    :func:`mix_captions`, pair ``i`` taking its caption when its :func:`caption_draws` draw for
    the loader's seed and current epoch is below ``probability``.

    Args:
        dataset: a :class:`WithStructureCaptions`.
        batch_size: pairs per batch and rank.
        probability: chance in [0, 1] that a pair's text is its structure caption.
        pad_token_id: the tokenizer's pad token.
        **kwargs: :class:`~clasp_pl.data.loading.ResumableDataLoader` arguments; its
            ``collate_fn`` is :func:`collate_captioned`.
    """

    def __init__(
        self,
        dataset: WithStructureCaptions,
        batch_size: int,
        probability: float,
        pad_token_id: int = 0,
        **kwargs: Any,
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"structure caption probability {probability} is not in [0, 1]")
        kwargs["collate_fn"] = functools.partial(collate_captioned, pad_token_id=pad_token_id)
        super().__init__(dataset, batch_size, **kwargs)
        self.probability = probability
        self.pad_token_id = pad_token_id

    def _batches(self) -> Iterator[PairBatch]:
        for batch in super()._batches():
            epoch = self._position[0]
            draws = caption_draws(self.sampler.seed, epoch, batch["item_id"])
            use_caption = torch.from_numpy(draws < self.probability)
            yield mix_captions(batch, use_caption, self.pad_token_id)
