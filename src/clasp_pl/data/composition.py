"""Composition and symmetry descriptors: the input of the composition-only baseline tower.

What does the crystal graph add beyond composition? The baseline answers it with a fixed-length
vector per structure (no graph):

- ``[0:100]``   element fractions (Z = 1..100, sums to 1);
- ``[100:330]`` one-hot space group number (1..230; all zero when symmetry detection fails);
- ``[330]``     log(number of sites in the cell);
- ``[331]``     volume per atom in Å^3, divided by 20;
- ``[332]``     density in g/cm^3, divided by 5.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pymatgen.core import Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from clasp_pl.data.records import CrystalRecord

N_ELEMENTS = 100
N_SPACE_GROUPS = 230
COMPOSITION_DIM = N_ELEMENTS + N_SPACE_GROUPS + 3


def space_group_number(structure: Structure, symprec: float = 0.1) -> int:
    """International space-group number (1..230), or 0 when spglib fails."""
    try:
        return int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
    except Exception:  # noqa: BLE001 - a failed symmetry search only loses that feature
        return 0


def composition_features(structure: Structure, symprec: float = 0.1) -> np.ndarray:
    """``[COMPOSITION_DIM]`` float32 descriptor of one ordered structure (layout above)."""
    features = np.zeros(COMPOSITION_DIM, np.float32)
    numbers = np.asarray(structure.atomic_numbers)
    np.add.at(features, np.clip(numbers, 1, N_ELEMENTS) - 1, 1.0 / len(numbers))
    group = space_group_number(structure, symprec)
    if group:
        features[N_ELEMENTS + group - 1] = 1.0
    features[-3] = np.log(len(structure))
    features[-2] = structure.volume / len(structure) / 20.0
    features[-1] = structure.density / 5.0
    return features


def composition_shard(symprec: float, indexed_lines: Sequence[tuple[int, str]]) -> list[dict]:
    """Descriptors of one shard of ``(record_index, record_json)``, one ``[1, F]`` item each."""
    return [
        {
            "features": composition_features(CrystalRecord.from_json(line).to_structure(), symprec)[
                None
            ]
        }
        for _, line in indexed_lines
    ]
