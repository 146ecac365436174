"""Reading and validating one CIF into the sites of one cell plus the paper's text.

Two readers build the same result:

* ``gemmi`` (default, fast): ``gemmi.cif.read_string`` parses the text; the atom-site loop,
  cell, symmetry (:mod:`clasp_pl.data.cif_symmetry`) and element symbols are read here, and the
  expansion to the full cell is vectorised (:mod:`clasp_pl.data.cif_sites`).
* ``pymatgen``: ``CifParser`` expands the cell (slower; a second opinion). When gemmi can read
  the text, its block also gives the text fields and the cell-size count for this reader; when it
  cannot, pymatgen's tokenizer does.

What is read the way a crystallographer expects:

* **Bytes**: UTF-8 (a byte-order mark is dropped); a file that is not valid UTF-8 (a cp1252 ``’``
  in an author name) is decoded as cp1252, else latin-1, and the record notes the encoding
  (``meta["text_encoding"]``); see :mod:`clasp_pl.data.cif_text`.
* **Syntax**: when gemmi rejects the file, a single-quoted value that runs over several lines
  and a value-less tag on the last line (``_eof``; both Crystallographica output, not valid
  CIF 1.1, read by pymatgen) are repaired (``meta["repaired_syntax"]``;
  :mod:`clasp_pl.data.cif_text`).
* **Symmetry**: operation lists under either tag, Hall symbols, Hermann–Mauguin symbols in old
  and spaced spellings, IT numbers; no symmetry at all is read as P1 and noted
  (``meta["assumed_p1"]``); see :mod:`clasp_pl.data.cif_symmetry`.
* **Elements**: the type symbol, else the label, gives the element: oxidation states and charges
  (``Fe3+``, ``O2-``) are dropped, label suffixes ignored, deuterium and tritium become ``H``.
* **Dummy atoms** (ring centroids ``Cg1``, ``Cp1``, ``Cnt``; ``X``, ``Q``, ``Du``, ``Dum``,
  ``Lp``; any site whose ``_atom_site_calc_flag`` is ``dum``) are dropped and counted
  (``meta["n_dummy_sites"]``): they are geometry helpers, not atoms
  (:mod:`clasp_pl.data.cif_elements`).

Then, in order: the rows of the atom loop are counted (more than ``max_cell_atoms`` rows: rejected
before they are read), the stated cell and occupancies are checked, the cell's atoms are counted
after the symmetry operations and *before* any neighbour search (cap ``max_cell_atoms``,
default 5 × ``max_atoms``; a site on a special position counts once), co-located atoms are
merged into sites and the occupancy policy applies (``mixed`` by default: disorder is kept; see
:mod:`clasp_pl.data.cif_sites` for ``mixed``, ``majority`` and ``skip``, and for what is merged),
the composition is checked against ``_chemical_formula_sum`` (:mod:`clasp_pl.data.formula`),
and a cell with more than ``max_atoms`` sites is replaced by its primitive cell
(:mod:`clasp_pl.data.cif_primitive`) when that is small enough.

Reject reasons (``Reject.reason``), every one a record can be refused for:

* reading: ``unreadable`` (the file cannot be read), ``unparseable`` (not CIF syntax, no
  readable atom loop, an unreadable symmetry operation, a reader error), ``no_sites`` (no atom
  loop, or no occupied site left), ``unknown_element`` (a site whose symbol names no element
  and no dummy atom);
* impossible numbers: ``non_finite`` (a missing or non-numeric cell parameter or coordinate),
  ``unphysical_cell`` (a cell length <= 0, an angle outside (0°, 180°) or angles that close no
  cell, less than 1 Å^3 per atom, two atoms 0.1 to 0.5 Å apart whose occupancies sum above
  1.05: they cannot both be there; split sites of one atom, whose occupancies add up to at most
  1, are legitimate and become one site), ``bad_occupancy`` (an occupancy outside [0, 1.05], or
  atoms at one position (within 0.1 Å) of different elements whose occupancies sum above 1.05:
  rejected rather than normalised, since scaling would invent a composition the authors did not
  report; sums up to 1.05 are rounding and are scaled to 1);
* policy and size: ``partial_occupancy`` (policy ``skip``), ``too_many_atoms`` (more than
  ``max_cell_atoms`` atoms in the conventional cell, or more than ``max_atoms`` sites in the
  primitive cell), ``formula_mismatch`` (the sites disagree with ``_chemical_formula_sum``);
* applied by ingestion (:mod:`clasp_pl.data.ingest`): ``missing_text``, ``timeout`` (the file
  took longer than the per-file time limit), ``out_of_memory`` (the worker's memory limit was
  hit); and applied by the feature caches (:mod:`clasp_pl.data.featurize`) to a record whose
  graph or descriptors cannot be computed, ``featurization_failed``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import gemmi
import numpy as np
from pymatgen.core import Lattice, Structure

from clasp_pl.data.cif_elements import element_symbol, site_element
from clasp_pl.data.cif_primitive import primitive_sites
from clasp_pl.data.cif_sites import (
    AsymmetricUnit,
    Atoms,
    OccupancyPolicy,
    Sites,
    check_occupancies,
    expand,
    resolve_sites,
)
from clasp_pl.data.cif_symmetry import SymmetryError, block_symmetry
from clasp_pl.data.cif_text import (
    clean_text,
    decode_cif_bytes,
    first_line,
    read_cif_text,
    read_document,
)
from clasp_pl.data.formula import check_formula, parse_formula
from clasp_pl.data.rejects import CifError, Reject

__all__ = [
    "DEFAULT_MAX_ATOMS",
    "CifError",
    "CifText",
    "OccupancyPolicy",
    "ParsedCif",
    "Reader",
    "clean_text",
    "decode_cif_bytes",
    "default_max_cell_atoms",
    "element_symbol",
    "parse_cif",
    "read_cif",
    "read_cif_text",
]

Reader = Literal["gemmi", "pymatgen"]

DEFAULT_MAX_ATOMS = 200
CELL_ATOM_FACTOR = 5  # default max_cell_atoms = CELL_ATOM_FACTOR * max_atoms
FORMULA_TAG = "_chemical_formula_sum"


@dataclass
class CifText:
    """Bibliographic text read from a CIF (COD field names)."""

    title: str = ""
    doi: str = ""
    year: int | None = None
    journal: str = ""


@dataclass
class ParsedCif:
    """The sites of one cell and the text of its CIF, with notes on how they were read.

    Attributes:
        sites: lattice (Å), fractional coordinates, dominant species and, for a disordered cell,
            the occupancies of each site (see :class:`~clasp_pl.data.cif_sites.Sites`).
        text: bibliographic fields of the CIF.
        primitive: whether the primitive cell replaced the conventional cell (size limit).
        n_dummy_sites: dummy atoms and centroids dropped from the atom list.
        encoding: how the bytes were decoded (``utf-8``, ``cp1252`` or ``latin-1``).
        assumed_p1: the CIF had no symmetry information; it was read as P1.
        repaired_syntax: a quoted value running over several lines, or a value-less last tag, was
            repaired (see :func:`repair_lenient_syntax`).
        hydrogen_not_located: the stated formula has H but no site does.
    """

    sites: Sites
    text: CifText = field(default_factory=CifText)
    primitive: bool = False
    n_dummy_sites: int = 0
    encoding: str = "utf-8"
    assumed_p1: bool = False
    repaired_syntax: bool = False
    hydrogen_not_located: bool = False

    @property
    def n_disordered(self) -> int:
        """Merged sites that were mixed or partially occupied before the policy applied."""
        return self.sites.n_disordered

    @property
    def n_dropped(self) -> int:
        """Vacancy-majority sites removed by the ``majority`` policy."""
        return self.sites.n_dropped

    @property
    def composition(self) -> dict[str, float]:
        """Occupancy-weighted amount of each element in the cell."""
        return self.sites.composition

    @property
    def structure(self) -> Structure:
        """The cell as a pymatgen ``Structure`` (disordered species on disordered sites)."""
        species = self.sites.occupancies or self.sites.species
        return Structure(Lattice(self.sites.lattice), species, self.sites.frac)


def default_max_cell_atoms(max_atoms: int) -> int:
    """The conventional-cell cap that goes with a site cap: ``CELL_ATOM_FACTOR * max_atoms``."""
    return CELL_ATOM_FACTOR * max_atoms


def read_cif(
    path: str | Path,
    *,
    reader: Reader = "gemmi",
    occupancy: OccupancyPolicy = "mixed",
    max_atoms: int = DEFAULT_MAX_ATOMS,
    max_cell_atoms: int | None = None,
    check_stated_formula: bool = True,
) -> ParsedCif | Reject:
    """Read one CIF file; never raises for bad input, returns a :class:`Reject` instead.

    The record id of a file is its stem (``cif/1/00/00/1000000.cif`` → ``1000000``).
    """
    path = Path(path)
    try:
        text, encoding = read_cif_text(path)
        parsed = parse_cif(
            text,
            str(path),
            reader=reader,
            occupancy=occupancy,
            max_atoms=max_atoms,
            max_cell_atoms=max_cell_atoms,
            check_stated_formula=check_stated_formula,
        )
    except CifError as err:
        return err.to_reject(str(path), path.stem)
    parsed.encoding = encoding
    return parsed


def parse_cif(
    text: str,
    name: str,
    *,
    reader: Reader = "gemmi",
    occupancy: OccupancyPolicy = "mixed",
    max_atoms: int = DEFAULT_MAX_ATOMS,
    max_cell_atoms: int | None = None,
    check_stated_formula: bool = True,
) -> ParsedCif:
    """Parse CIF text into the sites of a cell of at most ``max_atoms`` sites, plus its text.

    Args:
        text: CIF content; the first data block with atom sites is used.
        name: file or row name used in error messages.
        reader: ``"gemmi"`` or ``"pymatgen"``.
        occupancy: disorder policy, ``"mixed"``, ``"majority"`` or ``"skip"``.
        max_atoms: largest number of sites kept; the primitive cell is tried when the
            conventional cell is larger.
        max_cell_atoms: largest number of atoms of the conventional cell, counted before any
            neighbour search (default ``5 * max_atoms``).
        check_stated_formula: compare the sites with ``_chemical_formula_sum`` when present.

    Raises:
        CifError: with one of the module's reject reasons.
        ValueError: an unknown reader or policy (a programming error).
    """
    if reader not in ("gemmi", "pymatgen"):
        raise ValueError(f"unknown reader {reader!r}; use 'gemmi' or 'pymatgen'")
    cell_cap = max_cell_atoms if max_cell_atoms is not None else default_max_cell_atoms(max_atoms)
    document, repaired = read_document(text, name, required=reader == "gemmi")
    notes = {"repaired_syntax": repaired}
    if document is not None:
        block = _atom_block(document, name)
        unit, notes["n_dummy_sites"], params = _asymmetric_unit(block, name, cell_cap)
        try:
            symmetry = block_symmetry(block, params)
        except SymmetryError as err:
            raise CifError("unparseable", f"{name}: {err}") from None
        notes["assumed_p1"] = symmetry.assumed_p1
        atoms = expand(unit, symmetry, name, cell_cap)  # also the size check of both readers
        value = _tag_reader(block)
    if reader == "pymatgen":
        atoms = _pymatgen_atoms(text, name, cell_cap)
        if document is None:
            value = _pymatgen_tag_reader(text, name, cell_cap)
    parsed = ParsedCif(resolve_sites(atoms, name, occupancy), _cif_text(value), **notes)
    if check_stated_formula:
        parsed.hydrogen_not_located = _check_stated_formula(value(FORMULA_TAG), parsed, name)
    return _limit_size(parsed, name, max_atoms)


def _atom_block(document: gemmi.cif.Document, name: str) -> gemmi.cif.Block:
    """The first data block with an atom-site loop (``no_sites`` when there is none)."""
    for block in document:
        if block.find_values("_atom_site_fract_x"):
            return block
    raise CifError("no_sites", f"{name}: no _atom_site_fract_x loop")


def _cell_parameters(block: gemmi.cif.Block, name: str) -> tuple[float, ...]:
    """``(a, b, c, alpha, beta, gamma)`` in Å and degrees, checked to describe a cell."""
    values = []
    for tag in ("length_a", "length_b", "length_c", "angle_alpha", "angle_beta", "angle_gamma"):
        raw = block.find_value(f"_cell_{tag}")
        number = gemmi.cif.as_number(raw) if raw is not None else math.nan
        if not math.isfinite(number):
            raise CifError("non_finite", f"{name}: _cell_{tag} is missing or not a number")
        values.append(number)
    return check_cell(values, name)


def check_cell(params: list[float], name: str) -> tuple[float, ...]:
    """Reject cell parameters that describe no cell (``unphysical_cell``).

    Lengths must be positive, angles strictly between 0° and 180°, and the three angles must
    close a cell (the volume factor ``1 - Σcos² + 2Πcos`` is positive).
    """
    a, b, c, alpha, beta, gamma = params
    if min(a, b, c) <= 0:
        raise CifError("unphysical_cell", f"{name}: cell length <= 0 in {params}")
    if not all(0 < angle < 180 for angle in (alpha, beta, gamma)):
        raise CifError("unphysical_cell", f"{name}: cell angle outside (0, 180) in {params}")
    cos_a, cos_b, cos_g = (math.cos(math.radians(angle)) for angle in (alpha, beta, gamma))
    factor = 1 - cos_a**2 - cos_b**2 - cos_g**2 + 2 * cos_a * cos_b * cos_g
    if factor <= 1e-8:
        raise CifError("unphysical_cell", f"{name}: the cell angles close no cell in {params}")
    return tuple(params)


_SITE_TAGS = ("fract_x", "fract_y", "fract_z", "label", "type_symbol", "occupancy", "calc_flag")


def _site_columns(block: gemmi.cif.Block) -> tuple[list[list[str] | None], int]:
    """The raw values of the ``_atom_site_`` columns of :data:`_SITE_TAGS` (None when absent),
    and the number of rows. A loop is read in one call (its flat value list)."""
    loop = block.find_loop("_atom_site_fract_x").get_loop()
    if loop is None:  # a single site written as tag-value pairs
        values = [block.find_value("_atom_site_" + tag) for tag in _SITE_TAGS]
        return [[value] if value is not None else None for value in values], 1
    width, values = loop.width(), loop.values
    position = {tag.lower(): index for index, tag in enumerate(loop.tags)}
    columns = []
    for tag in _SITE_TAGS:
        index = position.get("_atom_site_" + tag)
        columns.append(values[index::width] if index is not None else None)
    return columns, loop.length()


def lattice_matrix(params: tuple[float, ...]) -> np.ndarray:
    """``[3, 3]`` lattice vectors (rows, Å) of ``(a, b, c, alpha, beta, gamma)``, in pymatgen's
    ``Lattice.from_parameters`` orientation (c along z), computed without building a Lattice."""
    a, b, c, alpha, beta, gamma = params
    cos_a, cos_b, cos_g = (math.cos(math.radians(angle)) for angle in (alpha, beta, gamma))
    sin_a, sin_b = math.sin(math.radians(alpha)), math.sin(math.radians(beta))
    gamma_star = math.acos(max(-1.0, min(1.0, (cos_a * cos_b - cos_g) / (sin_a * sin_b))))
    return np.array(
        [
            [a * sin_b, 0.0, a * cos_b],
            [-b * sin_a * math.cos(gamma_star), b * sin_a * math.sin(gamma_star), b * cos_a],
            [0.0, 0.0, c],
        ]
    )


def _asymmetric_unit(
    block: gemmi.cif.Block, name: str, max_cell_atoms: int
) -> tuple[AsymmetricUnit, int, tuple[float, ...]]:
    """The block's atom sites (dummy atoms removed), the number removed, and the cell.

    Read straight from the ``_atom_site_`` loop: the element comes from the type symbol, else
    the label; an occupancy of ``?`` or ``.`` is 1; a row without label and type symbol is a
    placeholder, not a site. A loop of more than ``max_cell_atoms`` rows is rejected before its
    rows are read (every listed site is at least one atom of the cell).
    """
    params = _cell_parameters(block, name)
    columns, n_rows = _site_columns(block)
    if n_rows > max_cell_atoms:
        raise CifError(
            "too_many_atoms", f"{name}: {n_rows} listed sites > max_cell_atoms={max_cell_atoms}"
        )
    if columns[3] is None and columns[4] is None:
        raise CifError("unparseable", f"{name}: atom sites have neither label nor type symbol")
    labels_raw = _strings(columns[3], n_rows)
    types_raw = _strings(columns[4], n_rows)
    flags = _strings(columns[6], n_rows)
    frac, elements, occupancies, labels = [], [], [], []
    n_dummy = 0
    for row in range(n_rows):
        symbol = types_raw[row] or labels_raw[row]
        if not symbol:  # a placeholder row ("? ? ? ?"): no site at all
            continue
        element = None if flags[row].lower() == "dum" else site_element(symbol)
        if element is None:
            n_dummy += 1
            continue
        if not element:
            raise CifError(
                "unknown_element",
                f"{name}: site {labels_raw[row]}: unknown element symbol {symbol!r}",
            )
        elements.append(element)
        frac.append([gemmi.cif.as_number(columns[axis][row]) for axis in range(3)])
        occupancies.append(gemmi.cif.as_number(columns[5][row], 1.0) if columns[5] else 1.0)
        labels.append(labels_raw[row] or symbol)
    if not elements:
        raise CifError("no_sites", f"{name}: no atom in the atom-site loop ({n_dummy} dummy)")
    frac_array = np.array(frac, dtype=float)
    if not np.isfinite(frac_array).all():
        bad = labels[int(np.flatnonzero(~np.isfinite(frac_array).all(axis=1))[0])]
        raise CifError("non_finite", f"{name}: site {bad} has non-finite coordinates")
    unit = AsymmetricUnit(
        lattice=lattice_matrix(params),
        frac=frac_array,
        elements=elements,
        occupancies=np.array(occupancies, dtype=float),
        labels=labels,
    )
    check_occupancies(unit, name)
    return unit, n_dummy, params


def _strings(column: list[str] | None, n_rows: int) -> list[str]:
    """Unquoted values of a loop column (``""`` for ``?``, ``.`` and a missing column)."""
    if column is None:
        return [""] * n_rows
    return [gemmi.cif.as_string(value) if value not in ("?", ".") else "" for value in column]


def _pymatgen_atoms(text: str, name: str, max_cell_atoms: int) -> Atoms:
    """The cell's atoms as pymatgen's ``CifParser`` expands them (one atom per species of each
    pymatgen site)."""
    from pymatgen.io.cif import CifParser

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parser = CifParser.from_str(text, occupancy_tolerance=100.0)
            structure = parser.parse_structures(primitive=False, on_error="raise")[0]
    except Exception as err:  # noqa: BLE001 - pymatgen raises many exception types for bad CIFs
        raise CifError("unparseable", f"{name}: pymatgen: {first_line(err)}") from None
    if len(structure) == 0:
        raise CifError("no_sites", f"{name}: no atom sites")
    check_cell(list(structure.lattice.abc) + list(structure.lattice.angles), name)
    if len(structure) > max_cell_atoms:
        raise CifError(
            "too_many_atoms",
            f"{name}: {len(structure)} atoms in the conventional cell"
            f" > max_cell_atoms={max_cell_atoms}",
        )
    if not np.isfinite(structure.frac_coords).all():
        raise CifError("non_finite", f"{name}: non-finite coordinates")
    frac, elements, occupancies, labels = [], [], [], []
    for index, site in enumerate(structure):
        for specie, occ in site.species.items():
            frac.append(site.frac_coords)
            elements.append(element_symbol(getattr(specie, "symbol", str(specie))))
            occupancies.append(occ)
            labels.append(f"{index}:{elements[-1]}")
    return Atoms(  # pymatgen merged symmetry duplicates: every atom is its own "listed site"
        lattice=structure.lattice.matrix,
        frac=np.array(frac) % 1.0,
        elements=elements,
        occupancies=np.array(occupancies, dtype=float),
        site_ids=np.arange(len(frac)),
        labels=labels,
    )


def _pymatgen_tag_reader(text: str, name: str, max_cell_atoms: int) -> Callable[[str], str]:
    """``tag -> cleaned text value`` of the first block as pymatgen's tokenizer reads it (for
    text that gemmi cannot read); a block listing more than ``max_cell_atoms`` sites is
    rejected before pymatgen expands it."""
    from pymatgen.io.cif import CifFile

    try:
        blocks = list(CifFile.from_str(text).data.values())
    except Exception as err:  # noqa: BLE001 - same as above: pymatgen raises many types
        raise CifError("unparseable", f"{name}: pymatgen: {first_line(err)}") from None
    data = next((b.data for b in blocks if "_atom_site_fract_x" in b.data), {})
    listed = len(data.get("_atom_site_fract_x", []))
    if listed > max_cell_atoms:
        raise CifError(
            "too_many_atoms", f"{name}: {listed} listed sites > max_cell_atoms={max_cell_atoms}"
        )

    def value(tag: str) -> str:
        raw = data.get(tag)
        return clean_text(raw if isinstance(raw, str) else None)

    return value


def _tag_reader(block: gemmi.cif.Block) -> Callable[[str], str]:
    """``tag -> cleaned text value`` (``""`` when absent) of a gemmi block."""

    def value(tag: str) -> str:
        raw = block.find_value(tag)
        return clean_text(gemmi.cif.as_string(raw)) if raw is not None else ""

    return value


def _check_stated_formula(stated: str, parsed: ParsedCif, name: str) -> bool:
    """Compare the sites with the stated formula; returns whether H was exempt (not located).

    Raises:
        CifError: ``formula_mismatch``.
    """
    amounts = parse_formula(stated) if stated else None
    if amounts is None:
        return False
    result = check_formula(amounts, parsed.composition)
    if result.mismatch:
        raise CifError(
            "formula_mismatch", f"{name}: {result.mismatch} (_chemical_formula_sum {stated!r})"
        )
    return result.hydrogen_not_located


def _limit_size(parsed: ParsedCif, name: str, max_atoms: int) -> ParsedCif:
    """Replace a conventional cell over ``max_atoms`` by its primitive cell, or reject."""
    count = len(parsed.sites.species)
    if count <= max_atoms:
        return parsed
    primitive = primitive_sites(parsed.sites)
    if len(primitive.species) > max_atoms:
        raise CifError(
            "too_many_atoms",
            f"{name}: {len(primitive.species)} sites in the primitive cell ({count} conventional)"
            f" > max_atoms={max_atoms}",
        )
    parsed.sites = primitive
    parsed.primitive = True
    return parsed


def _cif_text(value: Callable[[str], str]) -> CifText:
    """Title, DOI, year and journal of a COD-style block."""
    year = value("_journal_year")
    return CifText(
        title=value("_publ_section_title"),
        doi=value("_journal_paper_doi"),
        year=int(year) if year.isdigit() else None,
        journal=value("_journal_name_full"),
    )
