"""What the map shows of each structure: identity, chemistry and the paper, one :class:`MapPoint`.

Points come from an index folder (:func:`index_points`: ``meta.jsonl``, plus the mineral name and
year of ``records.jsonl.gz`` when ``clasp embed`` left it there) or from records
(:func:`record_points`, for ``clasp eval``). The crystal system is read from the space-group
symbol (its International Tables number), the chemical class from the formula
(:func:`~clasp_pl.data.labels.mineral_class_of`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pymatgen.symmetry.groups import SYMM_DATA

from clasp_pl.data.labels import CRYSTAL_SYSTEMS, mineral_class_of
from clasp_pl.data.records import CrystalRecord, iter_records
from clasp_pl.search.index import META
from clasp_pl.search.meta import record_meta

UNKNOWN = "unknown"
INDEX_RECORDS = "records.jsonl.gz"
"""The records file ``clasp embed`` writes into an index folder (mineral name and year)."""

# Last International Tables number of each crystal system, in the order of CRYSTAL_SYSTEMS.
_LAST_NUMBER = (2, 15, 74, 142, 167, 194, 230)


@dataclass(frozen=True)
class MapPoint:
    """One structure on the map.

    Attributes:
        id: the structure's id in its index or records file.
        formula: reduced formula (``"Mg2SiO4"``).
        spacegroup: Hermann–Mauguin symbol, ``"?"`` when unknown.
        mineral: mineral name, ``""`` when the source gives none.
        title: title of the paper that reported the structure.
        year: publication year, None when unknown.
        crystal_system: one of :data:`~clasp_pl.data.labels.CRYSTAL_SYSTEMS` or ``"unknown"``.
        chemical_class: one of :data:`~clasp_pl.data.labels.MINERAL_CLASSES` or ``"unknown"``.
    """

    id: str
    formula: str
    spacegroup: str
    mineral: str
    title: str
    year: int | None
    crystal_system: str
    chemical_class: str


def spacegroup_number(symbol: str) -> int | None:
    """International Tables number (1–230) of a Hermann–Mauguin symbol (``"P2_1/c"`` -> 14),
    None when the symbol is unknown (``"?"``)."""
    encoding = SYMM_DATA["space_group_encoding"]
    full = SYMM_DATA["abbreviated_spacegroup_symbols"].get(symbol, symbol)
    entry = encoding.get(symbol) or encoding.get(full)
    return int(entry["int_number"]) if entry else None


@lru_cache(maxsize=512)
def crystal_system_of(symbol: str) -> str:
    """Crystal system of a space-group symbol (``"Fd-3m"`` -> ``"cubic"``), ``"unknown"`` when
    the symbol is not one of the 230 types."""
    number = spacegroup_number(symbol)
    if number is None:
        return UNKNOWN
    return next(s for s, last in zip(CRYSTAL_SYSTEMS, _LAST_NUMBER, strict=True) if number <= last)


def chemical_class_of(formula: str) -> str:
    """Chemical class of a formula (:func:`~clasp_pl.data.labels.mineral_class_of`), ``"unknown"``
    when the formula cannot be parsed."""
    try:
        return mineral_class_of(formula)
    except ValueError:
        return UNKNOWN


def make_point(meta: dict[str, Any], record: CrystalRecord | None) -> MapPoint:
    """The point of one ``meta.jsonl`` line, with mineral and year from its record if known."""
    extra = record.meta if record is not None else {}
    year = extra.get("year")
    return MapPoint(
        id=str(meta["id"]),
        formula=meta.get("formula", ""),
        spacegroup=meta.get("spacegroup", "?"),
        mineral=str(extra.get("mineral") or ""),
        title=" ".join((meta.get("title") or "").split()),
        year=int(year) if isinstance(year, int | float) else None,
        crystal_system=crystal_system_of(meta.get("spacegroup", "?")),
        chemical_class=chemical_class_of(meta.get("formula", "")),
    )


def index_points(folder: str | Path) -> list[MapPoint]:
    """``[N]`` points of an index folder, in the order of its embeddings."""
    folder = Path(folder)
    with open(folder / META, encoding="utf-8") as handle:
        meta = [json.loads(line) for line in handle if line.strip()]
    records = index_records_by_id(folder)
    return [make_point(line, records.get(str(line["id"]))) for line in meta]


def index_records_by_id(folder: str | Path) -> dict[str, CrystalRecord]:
    """The records of an index folder by id (empty when it has no ``records.jsonl.gz``)."""
    path = Path(folder) / INDEX_RECORDS
    return {record.id: record for record in iter_records(path)} if path.is_file() else {}


def record_points(records: Iterable[CrystalRecord]) -> list[MapPoint]:
    """Points of records (space group found by spglib, as ``clasp embed`` does)."""
    return [make_point(record_meta(r, r.to_structure()), r) for r in records]


def hover_rows(points: Sequence[MapPoint]) -> list[list[str]]:
    """``[N, 5]`` hover fields of each point: id, formula, space group, mineral, title."""
    return [[p.id, p.formula, p.spacegroup, p.mineral or "–", p.title] for p in points]
