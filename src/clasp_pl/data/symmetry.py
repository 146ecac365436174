"""The space group of a structure, found by spglib (through pymatgen), or ``None``."""

from __future__ import annotations

from typing import NamedTuple

from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer
from spglib import SpglibError


class SpaceGroup(NamedTuple):
    """A structure's space group.

    Attributes:
        number: international number, 1..230.
        symbol: Hermann–Mauguin symbol, e.g. ``Fm-3m``.
        crystal_system: ``triclinic`` ... ``cubic`` (one of the 7 crystal systems).
    """

    number: int
    symbol: str
    crystal_system: str


def space_group(structure: Structure, symprec: float = 0.1) -> SpaceGroup | None:
    """The space group at tolerance ``symprec`` (Å); ``None`` when spglib cannot determine it
    (a cell it cannot analyse, atoms too close): that structure only lacks the symmetry."""
    try:
        analyzer = SpacegroupAnalyzer(structure, symprec=symprec)
        return SpaceGroup(
            int(analyzer.get_space_group_number()),
            analyzer.get_space_group_symbol(),
            analyzer.get_crystal_system(),
        )
    except (ValueError, SpglibError):  # pymatgen's SymmetryUndeterminedError is a ValueError
        return None
