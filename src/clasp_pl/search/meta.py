"""The meta line of an indexed structure: id, reduced formula, space group, source, title."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from clasp_pl.data.records import CrystalRecord

SYMPREC = 0.1
"""Symmetry tolerance of the space-group search, in Å."""
Symmetry = TypeVar("Symmetry")


def read_symmetry(
    structure: Structure,
    read: Callable[[SpacegroupAnalyzer], Symmetry],
    symprec: float = SYMPREC,
) -> Symmetry | None:
    """``read`` of pymatgen's symmetry analysis of ``structure`` (spglib, ``symprec`` in Å),
    e.g. ``SpacegroupAnalyzer.get_space_group_symbol``; None when spglib fails on the cell."""
    try:
        return read(SpacegroupAnalyzer(structure, symprec=symprec))
    except Exception:  # noqa: BLE001 - spglib fails on some odd cells; the caller goes on
        return None


def spacegroup_symbol(structure: Structure, symprec: float = SYMPREC) -> str:
    """Hermann-Mauguin symbol found by spglib (``symprec`` in Å), or ``"?"`` when it fails."""
    symbol = read_symmetry(structure, SpacegroupAnalyzer.get_space_group_symbol, symprec)
    return "?" if symbol is None else symbol


def record_meta(record: CrystalRecord, structure: Structure) -> dict[str, str]:
    """The ``meta.jsonl`` line of a record whose structure is ``structure``."""
    return {
        "id": record.id,
        "formula": structure.composition.reduced_formula,
        "spacegroup": spacegroup_symbol(structure),
        "source": record.source,
        "title": record.title,
    }
