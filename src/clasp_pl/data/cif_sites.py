"""From atoms listed in a CIF to the sites of one cell: symmetry expansion, merging, disorder.

Steps (all distances periodic, in Å):

1. :func:`expand` applies the symmetry operations to the asymmetric unit. Images of one site
   that coincide (closer than ``DUPLICATE_TOL``: the site lies on a special position) are one
   atom. The number of atoms of the cell is known here, before any neighbour search, and a cell
   above ``max_cell_atoms`` is rejected (``too_many_atoms``).
2. :func:`resolve_sites` finds atoms closer than ``MERGE_TOL`` (one neighbour search) and
   merges each connected group into one site: a mixed site (Fe and Mg at one position), the
   split positions of one disordered atom, or both. Leftover coincident images of one site (a
   symmetry list that is not a group) are dropped here.
3. Checks, and what is merged (``OVER_TOL`` = 0.05 allows for rounding of occupancies):

   * an atom's occupancy outside [0, 1 + ``OVER_TOL``]: ``bad_occupancy``;
   * fewer than ``MIN_VOLUME_PER_ATOM`` Å^3 of cell per atom: ``unphysical_cell``;
   * the same element twice within ``ROUNDING_TOL`` with occupancies summing above
     1 + ``OVER_TOL`` is one atom, counted in :attr:`Sites.n_repeated`: an atom listed twice
     (once more as its own symmetry image), or the images of a special position whose
     coordinates were rounded (``0.333`` for 1/3). Images of one site that close whose
     occupancies can both hold are a split site and are summed (so a half-occupied atom on a
     special position with rounded coordinates counts twice; diffraction does not resolve real
     splits that small);
   * other atoms within ``ROUNDING_TOL`` of each other (one position) whose occupancies sum above
     1 + ``OVER_TOL``: ``bad_occupancy`` (over-occupied; not normalised, because the stated
     numbers contradict themselves and scaling would invent a composition);
   * two atoms ``ROUNDING_TOL`` to ``MERGE_TOL`` apart whose occupancies sum above
     1 + ``OVER_TOL``: they cannot both be there, ``unphysical_cell``;
   * a group of linked atoms that is over-full as a whole (an O split over two positions and the
     H of one of them) becomes one site per element, and an element's part that is still
     over-full (an orientationally disordered N2 molecule: two N over eight positions of 1/4)
     one site per position: what the file states is kept, and the formula check judges it;
   * a site whose occupancies sum to (1, 1 + ``OVER_TOL``] is scaled to 1.
4. The occupancy policy (:data:`OccupancyPolicy`):

   * ``mixed`` (default): every site keeps all its elements and occupancies; the vacancy is the
     missing weight. A site with one element and occupancy ``>= 1 - OCCUPANCY_TOL`` counts as
     fully occupied (occupancy 1). Sites whose vacancy outweighs every element stay, partially
     occupied. The site's label (:attr:`Sites.species`) is its dominant element (highest
     occupancy; ties go to the element read first).
   * ``majority``: each site becomes its majority element, ordered. A site whose vacancy
     ``1 - sum(occupancies)`` is larger than every element's occupancy is *dropped*; ties go to
     the element read first, never to the vacancy. Loses minority elements (a Ca0.2 on a Pr site).
   * ``skip``: any site that is partially occupied or mixes elements rejects the structure
     (``partial_occupancy``): only fully ordered structures are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pymatgen.optimization.neighbors import find_points_in_spheres

from clasp_pl.data.cif_symmetry import Symmetry
from clasp_pl.data.rejects import CifError

OccupancyPolicy = Literal["mixed", "majority", "skip"]
OCCUPANCY_POLICIES: tuple[str, ...] = ("mixed", "majority", "skip")

MERGE_TOL = 0.5  # Å: atoms closer than this are one (possibly disordered) site
DUPLICATE_TOL = 0.02  # Å: images of one site closer than this are one atom (special position)
ROUNDING_TOL = 0.1  # Å: atoms closer than this are at one position up to rounding of the file
OCCUPANCY_TOL = 0.02  # a single-element occupancy >= 0.98 counts as full
OVER_TOL = 0.05  # occupancy sums up to 1.05 are rounding in the file (scaled to 1)
MIN_VOLUME_PER_ATOM = 1.0  # Å^3 of cell per atom; the densest solids have ~5
BRUTE_FORCE_ATOMS = 160  # up to this many atoms, pairs are found by a dense distance matrix


@dataclass
class AsymmetricUnit:
    """The atom sites listed in a CIF (one row per site, dummy atoms already removed).

    Attributes:
        lattice: ``[3, 3]`` lattice vectors as rows, Å.
        frac: ``[m, 3]`` fractional coordinates.
        elements: ``[m]`` element symbols.
        occupancies: ``[m]`` occupancies as stated (``?`` and ``.`` read as 1).
        labels: ``[m]`` site labels, for messages.
    """

    lattice: np.ndarray
    frac: np.ndarray
    elements: list[str]
    occupancies: np.ndarray
    labels: list[str]


@dataclass
class Atoms:
    """Atoms of one cell before merging.

    Attributes:
        lattice: ``[3, 3]`` lattice vectors as rows, Å.
        frac: ``[n, 3]`` fractional coordinates wrapped into [0, 1).
        elements: ``[n]`` element symbols.
        occupancies: ``[n]`` occupancies in (0, 1 + OVER_TOL].
        site_ids: ``[n]`` index of the listed site each atom is an image of.
        labels: ``[m]`` labels of the listed sites (indexed by ``site_ids``), for messages.
    """

    lattice: np.ndarray
    frac: np.ndarray
    elements: list[str]
    occupancies: np.ndarray
    site_ids: np.ndarray
    labels: list[str]


@dataclass
class Sites:
    """The sites of one cell after merging and the occupancy policy.

    Attributes:
        lattice: ``[3, 3]`` lattice vectors as rows, Å.
        frac: ``[n_sites, 3]`` fractional coordinates in [0, 1).
        species: ``[n_sites]`` dominant element of each site.
        occupancies: ``[n_sites]`` ``{element: occupancy}`` of each site, dominant element first
            (values in (0, 1], sum <= 1); empty when every site is one element at occupancy 1.
        n_disordered: merged sites that were mixed or partially occupied before the policy.
        n_dropped: vacancy-majority sites removed (``majority`` policy only).
        n_repeated: atoms dropped because the CIF lists them twice (same element at the same
            position under two labels, with occupancies that could not both hold).
    """

    lattice: np.ndarray
    frac: np.ndarray
    species: list[str]
    occupancies: list[dict[str, float]] = field(default_factory=list)
    n_disordered: int = 0
    n_dropped: int = 0
    n_repeated: int = 0

    @property
    def composition(self) -> dict[str, float]:
        """Amount of each element in the cell, weighted by occupancy."""
        if not self.occupancies:
            return _counts(self.species)
        total: dict[str, float] = {}
        for site in self.occupancies:
            for element, occupancy in site.items():
                total[element] = total.get(element, 0.0) + occupancy
        return total


def check_occupancies(unit: AsymmetricUnit, name: str) -> None:
    """Reject stated occupancies that are not finite or outside (0, 1 + OVER_TOL]; 0 is allowed
    (a listed but empty site, dropped by :func:`expand`)."""
    occ = unit.occupancies
    bad = ~np.isfinite(occ) | (occ < 0) | (occ > 1.0 + OVER_TOL)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise CifError(
            "bad_occupancy", f"{name}: site {unit.labels[index]} has occupancy {occ[index]:g}"
        )


def expand(unit: AsymmetricUnit, symmetry: Symmetry, name: str, max_cell_atoms: int) -> Atoms:
    """Apply the symmetry to the asymmetric unit; coincident images of a site are one atom.

    Raises:
        CifError: ``too_many_atoms`` when the cell has more than ``max_cell_atoms`` atoms
            (counted before any neighbour search), ``no_sites`` when no site is occupied.
    """
    occupied = np.flatnonzero(unit.occupancies > 0)
    if len(occupied) == 0:
        raise CifError("no_sites", f"{name}: no occupied atom site")
    if len(occupied) > max_cell_atoms:
        raise CifError(
            "too_many_atoms",
            f"{name}: {len(occupied)} listed sites > max_cell_atoms={max_cell_atoms}",
        )
    frac = unit.frac[occupied]
    images = (symmetry.rotations @ frac.T).transpose(2, 0, 1) + symmetry.translations
    images %= 1.0  # [m, n_ops, 3]
    offset = images - (frac % 1.0)[:, None, :]
    offset -= np.round(offset)
    fixed = _lengths(offset, unit.lattice) < DUPLICATE_TOL  # [m, n_ops]: op fixes the site
    stabiliser = np.maximum(fixed.sum(axis=1), 1)
    count = int((symmetry.n_ops // stabiliser).sum())
    if count > max_cell_atoms:
        raise CifError(
            "too_many_atoms",
            f"{name}: {count} atoms in the conventional cell > max_cell_atoms={max_cell_atoms}",
        )
    keep = np.ones(images.shape[:2], dtype=bool)
    special = np.flatnonzero(stabiliser > 1)
    if len(special):
        products = symmetry.products
        if products is not None:
            keep[special] = _coset_firsts(products, fixed[special])
        else:
            for site in special:
                keep[site] = _distinct_images(images[site], unit.lattice)
    site_index, _ = np.nonzero(keep)
    return Atoms(
        lattice=unit.lattice,
        frac=images[keep],
        elements=[unit.elements[occupied[i]] for i in site_index],
        occupancies=unit.occupancies[occupied][site_index].astype(float),
        site_ids=occupied[site_index],
        labels=unit.labels,
    )


def resolve_sites(atoms: Atoms, name: str, policy: OccupancyPolicy) -> Sites:
    """Merge atoms closer than ``MERGE_TOL``, check the result and apply ``policy``.

    Raises:
        CifError: ``unphysical_cell``, ``bad_occupancy``, ``partial_occupancy`` (policy
            ``skip``) or ``no_sites`` (every site dropped by ``majority``).
        ValueError: an unknown policy (a programming error).
    """
    if policy not in OCCUPANCY_POLICIES:
        raise ValueError(f"unknown occupancy policy {policy!r}; use one of {OCCUPANCY_POLICIES}")
    keep = np.ones(len(atoms.frac), dtype=bool)
    i, j, distance = close_pairs(atoms.lattice, atoms.frac, MERGE_TOL)
    same_element = np.zeros(0, dtype=bool)
    n_repeated = 0
    if len(i):
        occ = atoms.occupancies
        same_element = np.array(atoms.elements)[i] == np.array(atoms.elements)[j]
        image = (distance < DUPLICATE_TOL) & (atoms.site_ids[i] == atoms.site_ids[j])
        over_full = occ[i] + occ[j] > 1.0 + OVER_TOL
        repeated = (distance < ROUNDING_TOL) & ~image & same_element & over_full
        keep[j[image | repeated]] = False  # i < j: the later copy goes
        n_repeated = len(np.unique(j[repeated]))
        pairs = keep[i] & keep[j]
        i, j, distance, same_element = i[pairs], j[pairs], distance[pairs], same_element[pairs]
    total_occupancy = float(atoms.occupancies[keep].sum())
    volume = _volume(atoms.lattice)
    if volume / total_occupancy < MIN_VOLUME_PER_ATOM:
        raise CifError(
            "unphysical_cell",
            f"{name}: {volume / total_occupancy:.3g} Å^3 per atom"
            f" (< {MIN_VOLUME_PER_ATOM:g}; {total_occupancy:g} atoms in {volume:.3g} Å^3)",
        )
    if len(i):
        _check_close_pairs(atoms, i, j, distance, name)
        _check_co_located(atoms, i[distance < ROUNDING_TOL], j[distance < ROUNDING_TOL], name)
    kept = np.flatnonzero(keep)
    if len(i) == 0 and (atoms.occupancies[kept] >= 1.0 - OCCUPANCY_TOL).all():
        # nothing to merge and every atom fully occupied: an ordered cell (the common case)
        sites = Sites(atoms.lattice, atoms.frac[kept], [atoms.elements[k] for k in kept])
    else:
        groups = _site_groups(atoms, kept.tolist(), i.tolist(), j.tolist(), same_element.tolist())
        sites = _apply_policy(atoms, groups, name, policy)
    sites.n_repeated = n_repeated
    return sites


def _site_groups(
    atoms: Atoms, kept: list[int], i: list[int], j: list[int], same_element: list[bool]
) -> list[list[int]]:
    """Kept atoms grouped into sites, ordered by their first atom.

    Atoms linked by a close pair form one site when their occupancies sum to at most
    1 + OVER_TOL. An over-full group is a chain of alternatives of more than one atom: it is
    split into its same-element groups, each one site (an O split over two positions, and the H
    of one of them), and a same-element group that is still over-full into single positions (an
    orientationally disordered N2 molecule: two N over eight positions of 1/4): every pair
    closer than MERGE_TOL in it is already known to be mutually exclusive.
    """
    occ = atoms.occupancies.tolist()
    groups: list[list[int]] = []
    for group in _components(kept, zip(i, j, strict=True)):
        if sum(occ[k] for k in group) <= 1.0 + OVER_TOL:
            groups.append(group)
            continue
        inside = set(group)
        links = [
            (a, b) for a, b, same in zip(i, j, same_element, strict=True) if same and a in inside
        ]
        for part in _components(group, links):
            if sum(occ[k] for k in part) <= 1.0 + OVER_TOL:
                groups.append(part)
            else:  # alternatives of more than one atom: each position its own site
                groups += [[k] for k in part]
    return sorted(groups)


def _check_co_located(atoms: Atoms, i: np.ndarray, j: np.ndarray, name: str) -> None:
    """Atoms at one position (closer than ROUNDING_TOL) share one site's occupancy."""
    if len(i) == 0:
        return
    occ = atoms.occupancies.tolist()
    for group in _components(
        sorted(set(i.tolist()) | set(j.tolist())), zip(i.tolist(), j.tolist(), strict=True)
    ):
        total = sum(occ[k] for k in group)
        if total > 1.0 + OVER_TOL:
            listed = ", ".join(
                f"{atoms.labels[atoms.site_ids[k]]} {atoms.elements[k]} {occ[k]:g}" for k in group
            )
            raise CifError(
                "bad_occupancy",
                f"{name}: the occupancies at one position sum to {total:.3f} ({listed})",
            )


def _components(nodes: list[int], links) -> list[list[int]]:
    """Connected groups of ``nodes`` (ascending) joined by ``links`` (pairs of nodes), each
    ascending, ordered by their first node (a union-find; the pair lists here are short)."""
    parent = {node: node for node in nodes}

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in links:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for node in nodes:
        groups.setdefault(root(node), []).append(node)
    return list(groups.values())


def close_pairs(
    lattice: np.ndarray, frac: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Periodic pairs ``(i, j, distance)`` with ``i < j`` of atoms closer than ``radius`` Å."""
    n = len(frac)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    if n <= BRUTE_FORCE_ATOMS and radius < 0.5 * _min_width(lattice):
        # one image is nearest for distances below half the cell's smallest width
        delta = frac[:, None, :] - frac[None, :, :]
        delta -= np.round(delta)
        distance = _lengths(delta, lattice)  # [n, n]
        i, j = np.nonzero(distance < radius)
        upper = i < j
        i, j = i[upper], j[upper]
        return i, j, distance[i, j]
    cart = np.ascontiguousarray(frac @ lattice, dtype=float)
    centers, points, _, distances = find_points_in_spheres(
        cart,
        cart,
        r=radius,
        pbc=np.array([1, 1, 1], dtype=np.int64),
        lattice=np.ascontiguousarray(lattice, dtype=float),
        tol=1e-8,
    )
    upper = centers < points
    return centers[upper], points[upper], distances[upper]


def _lengths(delta: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    cart = delta @ lattice
    return np.sqrt(np.einsum("...k,...k->...", cart, cart))


def _min_width(lattice: np.ndarray) -> float:
    """Smallest distance between opposite faces of the cell, Å: volume / largest face area."""
    a, b, c = lattice.tolist()
    faces = [_cross(b, c), _cross(c, a), _cross(a, b)]
    volume = abs(sum(x * y for x, y in zip(a, faces[0], strict=True)))
    return volume / max(math.sqrt(sum(x * x for x in face)) for face in faces)


def _volume(lattice: np.ndarray) -> float:
    """Cell volume, Å^3."""
    a, b, c = lattice.tolist()
    return abs(sum(x * y for x, y in zip(a, _cross(b, c), strict=True)))


def _cross(u: list[float], v: list[float]) -> list[float]:
    return [u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]]


def _coset_firsts(products: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """``[n_sites, n_ops]`` mask of the operations that give each site's distinct images.

    Images ``g·x`` and ``h·x`` coincide iff ``g`` and ``h`` lie in one coset ``gS`` of the
    stabiliser ``S`` of ``x`` (``fixed``: ``[n_sites, n_ops]``, which operations fix each site);
    each coset keeps its first operation, ``min over s in S of index(g∘s)``.
    """
    n_ops = products.shape[0]
    firsts = np.empty(fixed.shape, dtype=bool)
    step = max(1, 2**20 // (n_ops * n_ops))
    for start in range(0, len(fixed), step):
        chunk = fixed[start : start + step, None, :]  # [c, 1, n_ops]
        first = np.where(chunk, products[None], n_ops).min(axis=2)  # [c, n_ops]
        firsts[start : start + step] = first == np.arange(n_ops)
    return firsts


def _distinct_images(images: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """``[n_ops]`` mask keeping the first of each group of coincident images of one site
    (``images``: ``[n_ops, 3]``); for operation lists that are not a group."""
    delta = images[:, None, :] - images[None, :, :]
    delta -= np.round(delta)
    close = _lengths(delta, lattice) < DUPLICATE_TOL  # [n_ops, n_ops]
    return ~np.tril(close, -1).any(axis=1)


def _check_close_pairs(
    atoms: Atoms, i: np.ndarray, j: np.ndarray, distance: np.ndarray, name: str
) -> None:
    """Atoms at distinct positions closer than MERGE_TOL must share one site's occupancy."""
    apart = distance >= ROUNDING_TOL
    summed = atoms.occupancies[i] + atoms.occupancies[j]
    bad = np.flatnonzero(apart & (summed > 1.0 + OVER_TOL))
    if len(bad):
        k = bad[np.argmin(distance[bad])]
        a, b = atoms.labels[atoms.site_ids[i[k]]], atoms.labels[atoms.site_ids[j[k]]]
        raise CifError(
            "unphysical_cell",
            f"{name}: atoms {a} and {b} are {distance[k]:.2f} Å apart with occupancies"
            f" summing to {summed[k]:.2f} (> 1: they cannot both be present)",
        )


def _apply_policy(
    atoms: Atoms, groups: list[list[int]], name: str, policy: OccupancyPolicy
) -> Sites:
    """One site per group of atoms, ordered as the groups; see the module docstring."""
    occ = atoms.occupancies.tolist()
    species: list[str] = []
    positions: list[int] = []
    site_occupancies: list[dict[str, float]] = []
    n_disordered = n_dropped = 0
    for group in groups:
        composition: dict[str, float] = {}
        for k in group:
            composition[atoms.elements[k]] = composition.get(atoms.elements[k], 0.0) + occ[k]
        total = sum(composition.values())
        if total > 1.0:  # at most 1 + OVER_TOL (see _site_groups): rounding in the file
            composition = {element: value / total for element, value in composition.items()}
            total = 1.0
        disordered = len(composition) > 1 or total < 1.0 - OCCUPANCY_TOL
        if disordered:
            n_disordered += 1
            if policy == "skip":
                label = atoms.labels[atoms.site_ids[group[0]]]
                raise CifError(
                    "partial_occupancy",
                    f"{name}: site {label} is partially occupied ({composition})",
                )
            if len(composition) > 1:
                composition = dict(sorted(composition.items(), key=_by_weight))
        else:
            composition = {next(iter(composition)): 1.0}
        dominant = next(iter(composition))
        if policy == "majority" and 1.0 - total > composition[dominant]:
            n_dropped += 1
            continue
        species.append(dominant)
        positions.append(group[0])
        site_occupancies.append(composition)
    if not species:
        raise CifError("no_sites", f"{name}: no atom sites left after the occupancy policy")
    ordered = policy != "mixed" or all(
        len(site) == 1 and next(iter(site.values())) == 1.0 for site in site_occupancies
    )
    return Sites(
        lattice=atoms.lattice,
        frac=atoms.frac[positions],
        species=species,
        occupancies=[] if ordered else site_occupancies,
        n_disordered=n_disordered,
        n_dropped=n_dropped,
    )


def _by_weight(item: tuple[str, float]) -> float:
    """Sort key: larger occupancy first (``sorted`` is stable: ties keep the order read)."""
    return -item[1]


def _counts(species: list[str]) -> dict[str, float]:
    counts: dict[str, float] = {}
    for element in species:
        counts[element] = counts.get(element, 0.0) + 1.0
    return counts
