"""Texts -> token ids -> padded batches, the same way for caption caches, collate and the API."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np


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


def length_sorted_batches(sequences: Sequence[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    """Row indices of ``sequences`` in batches of at most ``batch_size``, sorted by length
    (stable): sequences of similar length share a batch, so little of it is padding."""
    order = np.argsort([len(ids) for ids in sequences], kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
