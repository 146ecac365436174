"""Captions: the text side of a pair, composed from a record's fields.

Tokenizing them is :mod:`clasp_pl.text.tokens`' job."""

from __future__ import annotations

from collections.abc import Sequence

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
