"""Composition and symmetry descriptors: the input of the composition-only baseline tower and
of the fused tower's composition branch.

What does the crystal graph add beyond composition? The baseline answers it with a fixed-length
vector per structure (no graph):

- ``[0:100]``   element fractions (Z = 1..100, sums to 1) of the full, occupancy-weighted
  composition: ``Cs(Sn0.9In0.07)Cl3`` has Sn 0.9/4.97 and In 0.07/4.97, not the dominant Sn only;
- ``[100:330]`` one-hot space group number (1..230; all zero when symmetry detection fails); a
  disordered structure's is that of its average structure, every distinct mix of species on a
  site being one atom type (as for :mod:`clasp_pl.data.labels`' crystal system);
- ``[330]``     log(number of sites in the cell);
- ``[331]``     volume per atom in Å^3 (atoms = occupancy-weighted, the sites' occupancies
  summed; the number of sites for an ordered cell), divided by 20;
- ``[332]``     density in g/cm^3 (occupancy-weighted mass), divided by 5.

A structure with an element beyond Z = 100 has no descriptor (:func:`composition_features`
raises ``ValueError``; nothing is clipped): the cache stores its row as all-NaN and reports it as
a ``featurization_failed`` reject. Such a record has no crystal graph either (CGCNN's atom table
also ends at Z = 100), so it never appears in a pair.
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Structure

from clasp_pl.data.graphs import CGCNN_MAX_Z
from clasp_pl.data.symmetry import space_group

N_SPACE_GROUPS = 230
# Element slots Z = 1..100: the elements a crystal graph can hold too, so that the baseline and
# the graph tower see the same structures.
COMPOSITION_DIM = CGCNN_MAX_Z + N_SPACE_GROUPS + 3
FRACTIONS = slice(0, CGCNN_MAX_Z)
"""Descriptor columns of the element fractions (column ``Z - 1``)."""
SPACE_GROUP = slice(CGCNN_MAX_Z, CGCNN_MAX_Z + N_SPACE_GROUPS)
"""Descriptor columns of the space-group one-hot (column ``number - 1``)."""
SCALARS = slice(CGCNN_MAX_Z + N_SPACE_GROUPS, COMPOSITION_DIM)
"""Descriptor columns of log(sites), volume per atom / 20 Å^3 and density / 5 g/cm^3."""
CRYSTAL_SYSTEM_FIRST_GROUP = (1, 3, 16, 75, 143, 168, 195)
"""The lowest space-group number of each crystal system, in the order of
:data:`clasp_pl.data.labels.CRYSTAL_SYSTEMS` (triclinic 1-2 ... cubic 195-230)."""
# Part of the composition cache's key: bump it whenever the layout or scaling above changes.
COMPOSITION_FORMAT_VERSION = 2  # 1: sites counted by their dominant element; 2: occupancies


def composition_features(structure: Structure, symprec: float = 0.1) -> np.ndarray:
    """``[COMPOSITION_DIM]`` float32 descriptor of one structure, ordered or disordered (layout
    above).

    Raises:
        ValueError: for an element beyond Z = 100 (no element-fraction slot).
    """
    features = np.zeros(COMPOSITION_DIM, np.float32)
    composition = structure.composition
    numbers = np.array([element.Z for element in composition.elements], np.int64)
    if numbers.max(initial=0) > CGCNN_MAX_Z:
        raise ValueError(f"element with Z={numbers.max()} has no composition slot (Z <= 100)")
    if numbers.min(initial=1) < 1:  # pymatgen's dummy species have no atomic number
        raise ValueError("a dummy species has no composition slot")
    atoms = composition.num_atoms
    features[FRACTIONS][numbers - 1] = [
        composition[element] / atoms for element in composition.elements
    ]
    group = space_group(structure, symprec)
    if group is not None:  # a failed symmetry search only loses this part
        features[SPACE_GROUP][group.number - 1] = 1.0
    features[SCALARS] = [
        np.log(len(structure)),
        structure.volume / atoms / 20.0,
        structure.density / 5.0,
    ]
    return features
