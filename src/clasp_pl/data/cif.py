"""Reading and validating one CIF into an ordered pymatgen ``Structure`` plus the paper's text.

Two readers build the same result:

* ``gemmi`` (default, fast): ``gemmi.cif.read_string`` + ``gemmi.make_small_structure_from_block``,
  expanded to the full unit cell with the block's symmetry operations (vectorised here).
* ``pymatgen``: ``CifParser`` (slower, stricter about some CIF dialects).

Both feed the same disorder handling (:func:`resolve_atoms`):

1. Symmetry duplicates (same site label, closer than ``DUPLICATE_TOL`` = 0.02 Å, periodic) collapse
   to one atom; sites on special positions are therefore counted once.
2. Co-located atoms (closer than ``MERGE_TOL`` = 0.5 Å, periodic) form one disordered site whose
   composition is the sum of their occupancies per element (a mixed Fe/Mg site, or split
   positions of one atom).
3. The occupancy policy orders each site:

   * ``majority`` (default): the site becomes its majority element. When the vacancy fraction
     ``1 - sum(occupancies)`` is larger than every element's occupancy the site is *dropped*
     (a mostly empty interstitial or water position is not an atom of the idealised structure).
     Ties go to the element (first in the order read), never to the vacancy.
   * ``skip``: any site whose occupancy is not full (below ``1 - OCCUPANCY_TOL``) or that mixes
     elements rejects the whole structure with reason ``partial_occupancy``.

Species are reduced to plain element symbols: oxidation states and charges (``Fe3+``, ``O2-``)
are dropped, site-label suffixes are ignored, and the hydrogen isotopes deuterium and tritium
(``D``, ``T``) become ``H``.

Reject reasons (``Reject.reason``): ``unreadable`` (the file cannot be read), ``not_utf8``,
``unparseable``, ``no_sites``, ``non_finite``, ``bad_cell`` (zero or negative cell volume),
``partial_occupancy``, ``too_many_atoms``, ``unknown_element``; applied by ingestion,
``missing_text``; and applied by the feature caches (:mod:`clasp_pl.data.featurize`) to a record
whose graph or descriptors cannot be computed, ``featurization_failed``.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import gemmi
import numpy as np
from pymatgen.core import Element, Lattice, Structure
from pymatgen.optimization.neighbors import find_points_in_spheres

from clasp_pl.data.rejects import Reject

Reader = Literal["gemmi", "pymatgen"]
OccupancyPolicy = Literal["majority", "skip"]

MERGE_TOL = 0.5  # Å: atoms closer than this are one (possibly disordered) site
DUPLICATE_TOL = 0.02  # Å: same-label atoms closer than this are one symmetry duplicate
OCCUPANCY_TOL = 0.02  # occupancy >= 0.98 counts as full
DEFAULT_MAX_ATOMS = 200
RAW_ATOM_FACTOR = 100  # more than factor * max_atoms expanded atoms: reject before merging

_ISOTOPES = {"D": "H", "T": "H"}
_WS = re.compile(r"\s+")


class CifError(Exception):
    """A CIF that cannot become a record; ``reason`` is a :class:`Reject` code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def to_reject(self, source: str, record_id: str) -> Reject:
        return Reject(source=source, id=record_id, reason=self.reason, message=self.message)


@dataclass
class CifText:
    """Bibliographic text read from a CIF (COD field names)."""

    title: str = ""
    doi: str = ""
    year: int | None = None
    journal: str = ""


@dataclass
class ParsedCif:
    """An ordered structure and the text of its CIF.

    Attributes:
        structure: ordered pymatgen structure (one element per site, lattice in Å).
        text: bibliographic fields of the CIF.
        n_disordered: number of merged sites that were disordered before the policy applied.
        n_dropped: number of vacancy-majority sites removed by the ``majority`` policy.
        primitive: whether the primitive cell replaced the conventional cell (size limit).
    """

    structure: Structure
    text: CifText = field(default_factory=CifText)
    n_disordered: int = 0
    n_dropped: int = 0
    primitive: bool = False


@dataclass
class _Atoms:
    """Expanded atoms of one cell before disorder handling.

    Attributes:
        lattice: ``[3, 3]`` lattice vectors as rows, Å.
        frac: ``[n, 3]`` fractional coordinates wrapped into [0, 1).
        elements: ``[n]`` element symbols.
        occupancies: ``[n]`` site occupancies, normally in [0, 1]; atoms with occupancy 0 (listed
            but empty) are expected and dropped by :func:`_drop_duplicates`.
        labels: ``[n]`` site labels (symmetry copies share their label).
    """

    lattice: np.ndarray
    frac: np.ndarray
    elements: list[str]
    occupancies: np.ndarray
    labels: list[str]


def decode_cif_bytes(data: bytes, name: str) -> str:
    """Decode CIF bytes as UTF-8 (a byte-order mark is dropped); ``not_utf8`` otherwise."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CifError("not_utf8", f"{name}: not valid UTF-8 at byte {err.start}") from None


def clean_text(value: str | None) -> str:
    """Strip surrounding whitespace and quotes, and collapse inner whitespace and newlines."""
    if value is None:
        return ""
    value = _WS.sub(" ", value).strip()
    while len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].strip()
    return "" if value in ("?", ".") else value


def element_symbol(symbol: str) -> str:
    """Plain element symbol of a CIF type symbol or species (``Fe3+`` → ``Fe``, ``D`` → ``H``).

    Raises:
        CifError: ``unknown_element`` when no element can be read.
    """
    match = re.match(r"[A-Za-z]{1,2}", symbol.strip())
    letters = match.group(0) if match else ""
    for candidate in (letters[:2].capitalize(), letters[:1].upper()):
        if candidate in _ISOTOPES:
            return _ISOTOPES[candidate]
        if candidate and Element.is_valid_symbol(candidate):
            return candidate
    raise CifError("unknown_element", f"unknown element symbol {symbol!r}")


def read_cif_text(path: str | Path) -> str:
    """The text of a CIF file.

    Raises:
        CifError: ``unreadable`` when the file cannot be read, ``not_utf8`` on bad bytes.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise CifError("unreadable", f"{path}: {err.strerror}") from None
    return decode_cif_bytes(data, str(path))


def read_cif(
    path: str | Path,
    *,
    reader: Reader = "gemmi",
    occupancy: OccupancyPolicy = "majority",
    max_atoms: int = DEFAULT_MAX_ATOMS,
) -> ParsedCif | Reject:
    """Read one CIF file; never raises for bad input, returns a :class:`Reject` instead.

    The record id of a file is its stem (``cif/1/00/00/1000000.cif`` → ``1000000``).
    """
    path = Path(path)
    try:
        text = read_cif_text(path)
        return parse_cif(text, str(path), reader=reader, occupancy=occupancy, max_atoms=max_atoms)
    except CifError as err:
        return err.to_reject(str(path), path.stem)


def parse_cif(
    text: str,
    name: str,
    *,
    reader: Reader = "gemmi",
    occupancy: OccupancyPolicy = "majority",
    max_atoms: int = DEFAULT_MAX_ATOMS,
) -> ParsedCif:
    """Parse CIF text into an ordered structure of at most ``max_atoms`` sites, plus its text.

    Args:
        text: CIF content; the first data block with atom sites is used.
        name: file or row name used in error messages.
        reader: ``"gemmi"`` or ``"pymatgen"``.
        occupancy: disorder policy, ``"majority"`` or ``"skip"`` (see module docstring).
        max_atoms: largest number of sites kept; the primitive cell is tried when the
            conventional cell is larger.

    Raises:
        CifError: with one of the module's reject reasons.
    """
    try:
        document = gemmi.cif.read_string(text)
    except (RuntimeError, ValueError) as err:
        raise CifError("unparseable", f"{name}: {_first_line(err)}") from None
    block = _atom_block(document, name)
    if reader == "gemmi":
        atoms = _gemmi_atoms(block, name, max_atoms)
    elif reader == "pymatgen":
        atoms = _pymatgen_atoms(text, name, max_atoms)
    else:
        raise ValueError(f"unknown reader {reader!r}; use 'gemmi' or 'pymatgen'")
    parsed = resolve_atoms(atoms, name, occupancy)
    parsed.text = _cif_text(block)
    return _limit_size(parsed, name, max_atoms)


def resolve_atoms(atoms: _Atoms, name: str, occupancy: OccupancyPolicy) -> ParsedCif:
    """Merge duplicates and co-located atoms, then apply the occupancy policy.

    Raises:
        CifError: ``partial_occupancy`` (policy ``skip``) or ``no_sites``.
    """
    if occupancy not in ("majority", "skip"):
        raise ValueError(f"unknown occupancy policy {occupancy!r}; use 'majority' or 'skip'")
    keep = _drop_duplicates(atoms)
    clusters = _clusters(atoms.lattice, atoms.frac[keep], MERGE_TOL)
    species: list[str] = []
    coords: list[np.ndarray] = []
    n_disordered = n_dropped = 0
    for members in clusters:
        index = keep[members]
        composition: dict[str, float] = {}
        for i in index:
            composition[atoms.elements[i]] = composition.get(atoms.elements[i], 0.0)
            composition[atoms.elements[i]] += float(atoms.occupancies[i])
        total = sum(composition.values())
        disordered = len(composition) > 1 or total < 1.0 - OCCUPANCY_TOL
        n_disordered += disordered
        if disordered and occupancy == "skip":
            raise CifError(
                "partial_occupancy",
                f"{name}: site {atoms.labels[index[0]]} is partially occupied ({composition})",
            )
        element, occ = max(composition.items(), key=lambda item: item[1])
        if 1.0 - total > occ:
            n_dropped += 1
            continue
        species.append(element)
        coords.append(atoms.frac[index[0]])
    if not species:
        raise CifError("no_sites", f"{name}: no atom sites left after the occupancy policy")
    structure = Structure(Lattice(atoms.lattice), species, np.array(coords))
    return ParsedCif(structure=structure, n_disordered=n_disordered, n_dropped=n_dropped)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _atom_block(document: gemmi.cif.Document, name: str) -> gemmi.cif.Block:
    """The first data block with an atom-site loop (``no_sites`` when there is none)."""
    for block in document:
        if block.find_values("_atom_site_fract_x"):
            return block
    raise CifError("no_sites", f"{name}: no _atom_site_fract_x loop")


def _checked_lattice(params: list[float], name: str) -> np.ndarray:
    """Lattice matrix ``[3, 3]`` (Å) of ``a, b, c, alpha, beta, gamma`` after sanity checks."""
    if not all(math.isfinite(value) for value in params):
        raise CifError("non_finite", f"{name}: cell parameters are not finite ({params})")
    lattice = Lattice.from_parameters(*params)
    if not np.isfinite(lattice.matrix).all() or not lattice.volume > 1e-3:
        raise CifError("bad_cell", f"{name}: degenerate cell {params}")
    return lattice.matrix


def _check_raw_count(count: int, name: str, max_atoms: int) -> None:
    if count > RAW_ATOM_FACTOR * max_atoms:
        raise CifError("too_many_atoms", f"{name}: {count} atoms in the expanded cell")


def _gemmi_atoms(block: gemmi.cif.Block, name: str, max_atoms: int) -> _Atoms:
    """Expand a block's asymmetric unit to the full cell with gemmi."""
    try:
        small = gemmi.make_small_structure_from_block(block)
    except (RuntimeError, ValueError) as err:
        raise CifError("unparseable", f"{name}: {_first_line(err)}") from None
    if not small.sites:
        raise CifError("no_sites", f"{name}: the atom-site loop is empty")
    cell = small.cell
    lattice = _checked_lattice([cell.a, cell.b, cell.c, cell.alpha, cell.beta, cell.gamma], name)
    for site in small.sites:
        if not all(math.isfinite(x) for x in (site.fract.x, site.fract.y, site.fract.z)):
            raise CifError("non_finite", f"{name}: site {site.label} has non-finite coordinates")
    rotations, translations = _symmetry_operations(small, name)
    _check_raw_count(len(small.sites) * len(rotations), name, max_atoms)
    elements = []
    for site in small.sites:
        try:
            elements.append(element_symbol(site.type_symbol or site.element.name))
        except CifError as err:
            raise CifError(err.reason, f"{name}: site {site.label}: {err.message}") from None
    frac = np.array([[s.fract.x, s.fract.y, s.fract.z] for s in small.sites])
    images = np.einsum("oij,nj->noi", rotations, frac) + translations  # [n_sites, n_ops, 3]
    n_ops = len(rotations)
    return _Atoms(
        lattice=lattice,
        frac=images.reshape(-1, 3) % 1.0,
        elements=[element for element in elements for _ in range(n_ops)],
        occupancies=np.repeat([s.occ for s in small.sites], n_ops).astype(float),
        labels=[s.label for s in small.sites for _ in range(n_ops)],
    )


def _symmetry_operations(small: gemmi.SmallStructure, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Rotations ``[n_ops, 3, 3]`` and translations ``[n_ops, 3]`` (fractional) of a structure.

    The CIF's own operation list wins (as in pymatgen); otherwise the space group's operations.
    Images on special positions are merged later by :func:`_drop_duplicates` (gemmi's own
    ``get_all_unit_cell_sites`` would also merge split positions up to ~0.5 Å apart).
    """
    try:
        if small.symops:
            ops = [gemmi.Op(triplet) for triplet in small.symops]
        elif small.spacegroup is not None:
            ops = list(small.spacegroup.operations())
        else:
            raise CifError("unparseable", f"{name}: no space group or symmetry operations")
    except (RuntimeError, ValueError) as err:
        raise CifError("unparseable", f"{name}: bad symmetry operation: {err}") from None
    rotations = np.array([op.rot for op in ops], dtype=float) / gemmi.Op.DEN
    translations = np.array([op.tran for op in ops], dtype=float) / gemmi.Op.DEN
    return rotations, translations


def _pymatgen_atoms(text: str, name: str, max_atoms: int) -> _Atoms:
    """Expand the first structure of a CIF with pymatgen's ``CifParser``."""
    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parser = CifParser.from_str(text, occupancy_tolerance=100.0)
            structure = parser.parse_structures(primitive=False, on_error="raise")[0]
    except Exception as err:  # noqa: BLE001 - pymatgen raises many exception types for bad CIFs
        raise CifError("unparseable", f"{name}: pymatgen: {_first_line(err)}") from None
    if len(structure) == 0:
        raise CifError("no_sites", f"{name}: no atom sites")
    params = list(structure.lattice.abc) + list(structure.lattice.angles)
    lattice = _checked_lattice(params, name)
    if not np.isfinite(structure.frac_coords).all():
        raise CifError("non_finite", f"{name}: non-finite coordinates")
    _check_raw_count(len(structure), name, max_atoms)
    frac, elements, occupancies, labels = [], [], [], []
    for index, site in enumerate(structure):
        for specie, occ in site.species.items():
            frac.append(site.frac_coords)
            elements.append(element_symbol(getattr(specie, "symbol", str(specie))))
            occupancies.append(occ)
            labels.append(f"{index}:{elements[-1]}")  # pymatgen already merged duplicates
    return _Atoms(lattice, np.array(frac) % 1.0, elements, np.array(occupancies), labels)


def _drop_duplicates(atoms: _Atoms) -> np.ndarray:
    """Indices of atoms left after dropping empty (occupancy 0) atoms and collapsing same-label
    atoms closer than ``DUPLICATE_TOL``."""
    removed = ~(atoms.occupancies > 0)
    centers, points, distances = _pairs(atoms.lattice, atoms.frac, DUPLICATE_TOL)
    for i, j, _ in zip(centers, points, distances, strict=True):
        if i < j and not removed[i] and atoms.labels[i] == atoms.labels[j]:
            removed[j] = True
    return np.flatnonzero(~removed)


def _pairs(
    lattice: np.ndarray, frac: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Periodic pairs ``(i, j, distance)`` of atoms closer than ``radius`` Å (i != j)."""
    cart = np.ascontiguousarray(frac @ lattice, dtype=float)
    centers, points, _, distances = find_points_in_spheres(
        cart,
        cart,
        r=radius,
        pbc=np.array([1, 1, 1], dtype=np.int64),
        lattice=np.ascontiguousarray(lattice, dtype=float),
        tol=1e-8,
    )
    distinct = centers != points
    return centers[distinct], points[distinct], distances[distinct]


def _clusters(lattice: np.ndarray, frac: np.ndarray, radius: float) -> list[np.ndarray]:
    """Connected groups of atoms (indices into ``frac``) linked by distances below ``radius``."""
    parent = np.arange(len(frac))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    centers, points, _ = _pairs(lattice, frac, radius)
    for i, j in zip(centers, points, strict=True):
        ri, rj = root(int(i)), root(int(j))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([root(i) for i in range(len(frac))])
    return [np.flatnonzero(roots == r) for r in np.unique(roots)]


def _limit_size(parsed: ParsedCif, name: str, max_atoms: int) -> ParsedCif:
    """Replace a conventional cell over ``max_atoms`` by its primitive cell, or reject."""
    count = len(parsed.structure)
    if count <= max_atoms:
        return parsed
    primitive = parsed.structure.get_primitive_structure()
    if len(primitive) > max_atoms:
        raise CifError(
            "too_many_atoms",
            f"{name}: {len(primitive)} sites in the primitive cell ({count} conventional)"
            f" > max_atoms={max_atoms}",
        )
    parsed.structure = primitive
    parsed.primitive = True
    return parsed


def _cif_text(block: gemmi.cif.Block) -> CifText:
    """Title, DOI, year and journal of a COD-style block."""

    def value(tag: str) -> str:
        raw = block.find_value(tag)
        return clean_text(gemmi.cif.as_string(raw)) if raw is not None else ""

    year = value("_journal_year")
    return CifText(
        title=value("_publ_section_title"),
        doi=value("_journal_paper_doi"),
        year=int(year) if year.isdigit() else None,
        journal=value("_journal_name_full"),
    )
