"""Real structures grown to a target number of sites, for the large-cell benchmarks.

``--max-atoms 1000`` admits cells of up to 1,000 sites; the default data stops at 200. To time
featurization and training at 200, 500 and 1,000 sites on real chemistry, each of a few AMCSD
default structures (disorder kept) is repeated into the supercell whose site count is closest to
the target, preferring supercells whose edges are of similar length (as a large real cell's
are).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from clasp_pl.data.records import iter_records

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECORDS = REPO / "data" / "amcsd_default.jsonl.gz"
SIZES = (200, 500, 1000)


def base_structures(count: int, min_sites: int = 20, max_sites: int = 60) -> list[Structure]:
    """The first ``count`` default structures of ``min_sites``..``max_sites`` sites, one per
    reduced formula (as reported: disordered sites keep their occupancies)."""
    chosen: dict[str, Structure] = {}
    for record in iter_records(DEFAULT_RECORDS):
        formula = record.composition.reduced_formula
        if min_sites <= record.num_sites <= max_sites and formula not in chosen:
            chosen[formula] = record.to_structure()
            if len(chosen) == count:
                break
    return list(chosen.values())


def supercell_multiples(structure: Structure, sites: int) -> tuple[int, int, int]:
    """The ``(a, b, c)`` repetition (each 1..12) whose site count is closest to ``sites``;
    among equally close ones, the one whose edge lengths differ least."""
    lengths = np.array(structure.lattice.abc)

    def score(multiple: tuple[int, int, int]) -> tuple[int, float]:
        edges = lengths * multiple
        return abs(len(structure) * int(np.prod(multiple)) - sites), float(
            edges.max() / edges.min()
        )

    return min(itertools.product(range(1, 13), repeat=3), key=score)


def grown(structure: Structure, sites: int) -> Structure:
    """A supercell of ``structure`` with about ``sites`` sites (see :func:`supercell_multiples`)."""
    copy = structure.copy()
    copy.make_supercell(supercell_multiples(structure, sites))
    return copy


def large_sets(count: int, sizes: tuple[int, ...] = SIZES) -> dict[int, list[Structure]]:
    """For each target size, ``count`` real structures grown to about that many sites."""
    bases = base_structures(count)
    return {size: [grown(structure, size) for structure in bases] for size in sizes}
