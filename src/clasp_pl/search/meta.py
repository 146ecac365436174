"""The meta line of an indexed structure: id, reduced formula, space group, source, title.

The formula is that of the record's full, occupancy-weighted composition
(:func:`~clasp_pl.search.lexical.reduced_formula`: ``CsIn0.0672Sn0.9Cl3``, not the dominant
elements' ``CsSnCl3``) and the space group that of its structure as reported (disorder kept).
"""

from __future__ import annotations

from pymatgen.core import Structure

from clasp_pl.data.records import CrystalRecord
from clasp_pl.data.symmetry import space_group
from clasp_pl.search.lexical import reduced_formula

SYMPREC = 0.1
"""Symmetry tolerance of the space-group search, in Å."""


def spacegroup_symbol(structure: Structure, symprec: float = SYMPREC) -> str:
    """Hermann-Mauguin symbol found by spglib (``symprec`` in Å), or ``"?"`` when it fails."""
    group = space_group(structure, symprec)
    return "?" if group is None else group.symbol


def record_meta(record: CrystalRecord, structure: Structure) -> dict[str, str]:
    """The ``meta.jsonl`` line of a record whose structure (as reported) is ``structure``."""
    return {
        "id": record.id,
        "formula": reduced_formula(record.composition),
        "spacegroup": spacegroup_symbol(structure),
        "source": record.source,
        "title": record.title,
    }
