"""Class labels of disordered structures: symmetry of the structure as reported, chemical class
of the full composition."""

from __future__ import annotations

from pymatgen.core import Lattice, Structure

from clasp_pl.data.labels import (
    CLASS_TARGETS,
    CRYSTAL_SYSTEM,
    CRYSTAL_SYSTEMS,
    MINERAL_CLASS,
    MINERAL_CLASSES,
)
from clasp_pl.data.records import CrystalRecord
from clasp_pl.data.symmetry import space_group

# Mg on the corner, a Mg/Ti mix on the body centre: primitive cubic. Relabelled by the majority
# element the two sites are equal and the cell turns body-centred.
MIXED_BODY_CENTRE = CrystalRecord.from_structure(
    "mg-ti",
    Structure(Lattice.cubic(3.1), ["Mg", {"Mg": 0.6, "Ti": 0.4}], [[0, 0, 0], [0.5] * 3]),
)


def label(target: str, record: CrystalRecord) -> str | None:
    classes, of = CLASS_TARGETS[target]
    index = of(record)
    return None if index is None else classes[index]


def test_symmetry_is_that_of_the_disordered_structure_not_a_majority_stand_in() -> None:
    assert not MIXED_BODY_CENTRE.is_ordered
    assert space_group(MIXED_BODY_CENTRE.to_structure()).symbol == "Pm-3m"
    assert space_group(MIXED_BODY_CENTRE.to_ordered_structure()).symbol == "Im-3m"
    assert label(CRYSTAL_SYSTEM, MIXED_BODY_CENTRE) == "cubic" == CRYSTAL_SYSTEMS[-1]


def test_a_disordered_tetragonal_cell_is_tetragonal() -> None:
    record = CrystalRecord.from_structure(
        "tet",
        Structure(
            Lattice.tetragonal(4.0, 6.0), [{"Fe": 0.5, "Ni": 0.5}, "Pt"], [[0, 0, 0], [0.5] * 3]
        ),
    )
    assert label(CRYSTAL_SYSTEM, record) == "tetragonal"


def test_mineral_class_sees_an_element_of_a_minor_or_disordered_site() -> None:
    # a carbonate whose C and O sites are partly occupied (vaterite-like): majority drops them
    carbonate = CrystalRecord.from_structure(
        "carbonate",
        Structure(
            Lattice.hexagonal(4.1, 8.5),
            ["Ca", {"C": 0.33}, {"O": 0.33}, {"O": 0.33}, {"O": 0.33}],
            [[0, 0, 0], [0.33, 0.67, 0.25], [0.2, 0.4, 0.25], [0.5, 0.8, 0.25], [0.3, 0.9, 0.25]],
        ),
    )
    assert label(MINERAL_CLASS, carbonate) == "carbonates" in MINERAL_CLASSES
    # what the majority policy kept of vaterite (amcsd-19141): Ca alone
    calcium = CrystalRecord.from_structure(
        "ca", Structure(Lattice.hexagonal(4.1, 8.5), ["Ca"], [[0, 0, 0]])
    )
    assert label(MINERAL_CLASS, calcium) == "elements"
