"""What colours the map: a category of each point, the publication year, or a query's score.

A :class:`Colouring` is either categorical (one label per point, one legend entry per label)
or continuous (one number per point on a colour bar, NaN where unknown).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clasp_pl.data.labels import CRYSTAL_SYSTEMS, MINERAL_CLASSES
from clasp_pl.viz.points import UNKNOWN, MapPoint

CRYSTAL_SYSTEM = "crystal_system"
CHEMICAL_CLASS = "chemical_class"
YEAR = "year"
FIELDS = (CRYSTAL_SYSTEM, CHEMICAL_CLASS, YEAR)
"""``--color-by`` values that name a field; anything else is a free-text query."""

_ORDER = {CRYSTAL_SYSTEM: CRYSTAL_SYSTEMS, CHEMICAL_CLASS: MINERAL_CLASSES}


@dataclass(frozen=True)
class Colouring:
    """The colour of every point.

    Attributes:
        title: what the colour means (legend or colour-bar title), e.g. ``"crystal system"``.
        labels: ``[N]`` category of each point (categorical), else None.
        categories: the categories in legend order (categorical), else empty.
        values: ``[N]`` float64 value of each point, NaN when unknown (continuous), else None.
    """

    title: str
    labels: tuple[str, ...] | None = None
    categories: tuple[str, ...] = ()
    values: np.ndarray | None = None

    @property
    def continuous(self) -> bool:
        return self.values is not None


def categorical(title: str, labels: Sequence[str], order: Sequence[str] = ()) -> Colouring:
    """Categories in ``order`` first (those present), then the rest sorted, ``"unknown"`` last."""
    present = set(labels)
    rest = sorted(present - set(order) - {UNKNOWN})
    categories = [c for c in order if c in present] + rest + ([UNKNOWN] * (UNKNOWN in present))
    return Colouring(title=title, labels=tuple(labels), categories=tuple(categories))


def colour_by_field(points: Sequence[MapPoint], field: str) -> Colouring:
    """Colouring by one of :data:`FIELDS`."""
    if field == YEAR:
        years = [np.nan if p.year is None else float(p.year) for p in points]
        return Colouring(title="publication year", values=np.array(years, dtype=np.float64))
    if field not in _ORDER:
        raise ValueError(f"cannot colour by {field!r}; fields are {', '.join(FIELDS)}")
    labels = [getattr(p, field) for p in points]
    return categorical(field.replace("_", " "), labels, _ORDER[field])


def colour_by_scores(query: str, scores: np.ndarray) -> Colouring:
    """Colouring by ``[N]`` scores of a query (cosine similarity of the learned embeddings)."""
    return Colouring(title=f"cosine similarity to “{query}”", values=np.asarray(scores, np.float64))
