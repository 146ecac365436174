"""The one space-group helper: a real structure's group, and None where spglib gives up."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Lattice, Structure

from clasp_pl.data.composition import composition_features
from clasp_pl.data.graphs import CGCNN_MAX_Z
from clasp_pl.data.labels import CLASS_TARGETS, CRYSTAL_SYSTEM, CRYSTAL_SYSTEMS
from clasp_pl.data.records import CrystalRecord
from clasp_pl.data.symmetry import SpaceGroup, space_group

ROCK_SALT = Structure.from_spacegroup(
    "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
)
OVERLAPPING = Structure(Lattice.cubic(4.0), ["Na", "Na"], [[0, 0, 0], [0, 0, 0]])


def test_rock_salt_is_fm3m() -> None:
    assert space_group(ROCK_SALT) == SpaceGroup(225, "Fm-3m", "cubic")


def test_a_cell_spglib_cannot_analyse_has_no_space_group() -> None:
    assert space_group(OVERLAPPING) is None


def test_users_of_the_space_group_agree() -> None:
    """The composition descriptor's one-hot and the crystal-system label come from it."""
    features = composition_features(ROCK_SALT)
    assert np.flatnonzero(features[CGCNN_MAX_Z : CGCNN_MAX_Z + 230]).tolist() == [224]
    assert not composition_features(OVERLAPPING)[CGCNN_MAX_Z : CGCNN_MAX_Z + 230].any()
    target = CLASS_TARGETS[CRYSTAL_SYSTEM]
    record = CrystalRecord.from_structure("nacl", ROCK_SALT)
    assert target.classes[target.label(record)] == "cubic" == CRYSTAL_SYSTEMS[-1]
    assert target.label(CrystalRecord.from_structure("bad", OVERLAPPING)) is None
