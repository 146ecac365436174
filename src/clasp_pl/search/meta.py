"""The meta line of an indexed structure: id, reduced formula, space group, source, title."""

from __future__ import annotations

from pymatgen.core import Structure

from clasp_pl.data.records import CrystalRecord
from clasp_pl.data.symmetry import space_group

SYMPREC = 0.1
"""Symmetry tolerance of the space-group search, in Å."""


def spacegroup_symbol(structure: Structure, symprec: float = SYMPREC) -> str:
    """Hermann-Mauguin symbol found by spglib (``symprec`` in Å), or ``"?"`` when it fails."""
    group = space_group(structure, symprec)
    return "?" if group is None else group.symbol


def record_meta(record: CrystalRecord, structure: Structure) -> dict[str, str]:
    """The ``meta.jsonl`` line of a record whose structure is ``structure``."""
    return {
        "id": record.id,
        "formula": structure.composition.reduced_formula,
        "spacegroup": spacegroup_symbol(structure),
        "source": record.source,
        "title": record.title,
    }
