"""Why an input did not become a record or a feature: one type for every layer that rejects,
and the exception that carries it out of the readers."""

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


class CifError(Exception):
    """An input that cannot become a record; ``reason`` is a :class:`Reject` code (the codes are
    listed in :mod:`clasp_pl.data.cif`) and ``message`` names the input."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def to_reject(self, source: str, record_id: str) -> Reject:
        return Reject(source=source, id=record_id, reason=self.reason, message=self.message)
