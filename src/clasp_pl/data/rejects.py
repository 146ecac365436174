"""Why an input did not become a record or a feature: one type for every layer that rejects."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Reject:
    """Why one input did not become a record (or a cached feature).

    Attributes:
        source: file (and row) the input came from.
        id: record id the input would have had.
        reason: short machine-readable code (see :mod:`clasp_pl.data.cif` for the list).
        message: human-readable explanation naming the file.
    """

    source: str
    id: str
    reason: str
    message: str

    def to_json(self) -> str:
        """One JSON line of a ``rejects.jsonl`` file."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, values: dict) -> Reject:
        return cls(**{name: str(values[name]) for name in ("source", "id", "reason", "message")})
