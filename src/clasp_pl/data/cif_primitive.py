"""The primitive cell of a cell's sites, for cells over the site cap."""

from __future__ import annotations

import numpy as np
import spglib
from pymatgen.core import Lattice, Structure

from clasp_pl.data.cif_sites import Sites

PRIMITIVE_SYMPREC = 0.1  # Å: tolerance of the lattice-translation search (spglib)


def primitive_sites(sites: Sites, symprec: float = PRIMITIVE_SYMPREC) -> Sites:
    """The primitive cell of ``sites`` (the same cell when it is already primitive).

    spglib finds the lattice translations (each distinct ``{element: occupancy}`` is one atom
    type, so disorder is respected) about ten times faster than pymatgen's
    ``get_primitive_structure``, which is the fallback when spglib finds no cell.
    """
    keys = [tuple(site.items()) for site in sites.occupancies] or [(sp,) for sp in sites.species]
    types = {key: number for number, key in enumerate(dict.fromkeys(keys), start=1)}
    cell = (sites.lattice, sites.frac, [types[key] for key in keys])
    found = spglib.standardize_cell(cell, to_primitive=True, no_idealize=True, symprec=symprec)
    if found is None:
        return _structure_sites(
            Structure(
                Lattice(sites.lattice), sites.occupancies or sites.species, sites.frac
            ).get_primitive_structure(),
            sites,
        )
    lattice, frac, numbers = found
    by_number = {number: key for key, number in types.items()}
    chosen = [by_number[int(number)] for number in numbers]
    return Sites(
        lattice=np.asarray(lattice, dtype=float),
        frac=np.asarray(frac, dtype=float) % 1.0,
        species=[key[0] if isinstance(key[0], str) else key[0][0] for key in chosen],
        occupancies=[dict(key) for key in chosen] if sites.occupancies else [],
        n_disordered=sites.n_disordered,
        n_dropped=sites.n_dropped,
        n_repeated=sites.n_repeated,
    )


def _structure_sites(structure: Structure, before: Sites) -> Sites:
    """Sites of a pymatgen structure made from ``before`` (keeps its counts)."""
    occupancies = [
        dict(sorted(((sp.symbol, float(occ)) for sp, occ in site.species.items()), key=_by_weight))
        for site in structure
    ]
    return Sites(
        lattice=structure.lattice.matrix,
        frac=structure.frac_coords % 1.0,
        species=[next(iter(site)) for site in occupancies],
        occupancies=occupancies if before.occupancies else [],
        n_disordered=before.n_disordered,
        n_dropped=before.n_dropped,
        n_repeated=before.n_repeated,
    )


def _by_weight(item: tuple[str, float]) -> float:
    return -item[1]
