"""Captions: the text side of a pair, composed from a record's fields and tokenized."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clasp_pl.data.records import CrystalRecord

CAPTION_FIELDS = ("title", "abstract", "keywords")
# Part of the caption caches' keys: bump it whenever compose_caption's output changes (separator,
# how keywords are joined, field order), so cached tokens and text features are recomputed.
CAPTION_FORMAT_VERSION = 1


def compose_caption(
    record: CrystalRecord, fields: Sequence[str] = CAPTION_FIELDS, separator: str = " [SEP] "
) -> str:
    """Join the record's non-empty text fields (keywords joined by ", ") with ``separator``."""
    unknown = set(fields) - set(CAPTION_FIELDS)
    if unknown:
        raise ValueError(f"unknown caption fields {sorted(unknown)}; choose from {CAPTION_FIELDS}")
    parts = []
    for name in fields:
        value = getattr(record, name)
        text = ", ".join(value) if isinstance(value, list) else value
        if text and text.strip():
            parts.append(text.strip())
    return separator.join(parts)


def encode_captions(tokenizer, captions: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Token ids of each caption: int32 ``[n_tokens]``, special tokens included, truncated to
    ``max_length``, unpadded."""
    encoded = tokenizer(list(captions), truncation=True, max_length=max_length)
    return [np.asarray(ids, np.int32) for ids in encoded["input_ids"]]


def empty_caption_length(tokenizer, max_length: int) -> int:
    """Tokens the tokenizer gives an empty caption (its special tokens: 2 for BERT's ``[CLS]
    [SEP]``, 0 for a tokenizer without any); a caption with no more tokens has no text."""
    return len(encode_captions(tokenizer, [""], max_length)[0])


def pad_token_ids(
    sequences: Sequence[np.ndarray], pad_token_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id sequences to the longest one.

    Returns:
        ``input_ids [B, L]`` int64 (padding = ``pad_token_id``) and ``attention_mask [B, L]``
        int64 (1 on tokens, 0 on padding).
    """
    lengths = [len(ids) for ids in sequences]
    input_ids = np.full((len(sequences), max(lengths, default=0)), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    for row, (ids, length) in enumerate(zip(sequences, lengths, strict=True)):
        input_ids[row, :length] = ids
        attention_mask[row, :length] = 1
    return input_ids, attention_mask
