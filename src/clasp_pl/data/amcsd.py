"""The default dataset: the AMCSD SQLite database shipped in the ``larixite`` wheel.

``larixite`` 2026.1.0 ships ``larixite/amcsd_cif1.db`` (American Mineralogist Crystal Structure
Database, 9,275 structures with the titles of their papers). larixite is *not* a dependency: the
database is read here with ``sqlite3`` and each row is turned into a CIF string that goes through
the same reader as user CIFs (:func:`clasp_pl.data.cif.parse_cif`).

Row format (table ``cif``): cell lengths/angles as text, site labels as a JSON list, fractional
coordinates and occupancies as base64 ``int32`` arrays scaled by 4e6 (2.0 encodes ``?``,
3.0 encodes ``.``; a field ``'0'`` means absent, i.e. occupancy 1). Symmetry operations come from
``spacegroups.symmetry_xyz`` (JSON list of ``x,y,z`` strings).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Element

from clasp_pl.data.cache import file_fingerprint
from clasp_pl.data.cif import DEFAULT_MAX_ATOMS, CifError, parse_cif
from clasp_pl.data.cif_sites import OccupancyPolicy
from clasp_pl.data.ingest import resolution_meta, write_outputs
from clasp_pl.data.parallel import parallel_map
from clasp_pl.data.records import CrystalRecord, paper_group
from clasp_pl.data.rejects import Reject

FARRAY_SCALE = 4.0e6
LARIXITE_HINT = "pip install larixite==2026.1.0, or pass --db PATH to amcsd_cif1.db"

# Site labels of water / hydroxyl atoms that do not start with their element symbol.
_LABEL_ALIASES = {"WAT": "O", "OW": "O", "HW": "H", "D": "H", "T": "H"}

# A title line that is always an annotation: notes, samples, COD cross-references, conditions.
_ANNOTATION = re.compile(
    r"(?:_cod_database_code|notes?\b|samples?\b|at\s[TP]\b|[TP]\s?=|[\w.+\-/*]{1,20}\s?=\s?\S"
    r"|[A-Z]\w+\s(?:time|temperature|pressure)\s?=)",
    re.IGNORECASE,
)
# A first line that is an annotation: the record has no title at all.
_HEADER_ANNOTATION = re.compile(r"_cod_database_code|(?:notes?|samples?)\s*:", re.IGNORECASE)
# Words after which a title line goes on, whatever its length.
_CONTINUES_AFTER = re.compile(
    r"(?:[,:;(\-]|\b(?:of|and|the|in|by|for|with|to|from|at|on|a|an|its|their|between|as|or"
    r"|und|der|die|das|sowie|verwachsener|von|im|mit|des|de|du|la|le|les|et|dans|par|sur|en|di|del"
    r"|della|e|y))$",
    re.IGNORECASE,
)
# Beginnings of a line that continues running text.
_CONTINUES_WITH = re.compile(
    r"(?:[(\-]|(?:and|of|the|in|by|for|with|to|from|at|on|an?|as|or|its|their|between|under"
    r"|using|via|und|der|die|von|des|de|du|et|la|les|dans|par)\b)"
)
# A subtitle sentence after a full stop ("... peroxide.\n A neutron-diffraction study").
_SUBTITLE = re.compile(r"(?:A|An|The|[IVX]+\.)\s")
# A structure-type note ("rocksalt structure", "Body centered cubic, bcc, structure").
_STRUCTURE_TYPE = re.compile(r"(?:[\w\-]+,?\s){1,4}structure", re.IGNORECASE)
_FUNCTION_WORDS = frozenset(
    "of the and in with from to for a an on at by des de et und der die von".split()
)
# A "title" that is a book's imprint, not a paper title: Wyckoff's *Crystal Structures* (2nd ed.)
# entries carry "Second edition. Interscience Publishers, New York, New York" (748 structures).
_IMPRINT = re.compile(
    r"^(?:first|second|third|\d+(?:st|nd|rd|th))\s+edition\b|publishers?\b", re.IGNORECASE
)
WRAP_WIDTH = 66  # characters: a line this long with the next word did not fit, so it was wrapped


@dataclass
class AmcsdRow:
    """One AMCSD structure as stored in the database (values already decoded)."""

    id: int
    title: str
    mineral: str
    journal: str
    volume: str
    year: int | None
    page_first: str
    authors: list[str]
    cell: list[str]
    symops: list[str]
    labels: list[str]
    frac: np.ndarray
    occupancies: np.ndarray | None
    elements: list[str]
    formula: str = ""


def find_default_db() -> Path:
    """``amcsd_cif1.db`` inside an installed ``larixite`` (found without importing it).

    Raises:
        FileNotFoundError: larixite is not installed or lacks the database.
    """
    spec = importlib.util.find_spec("larixite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"larixite is not installed: {LARIXITE_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "amcsd_cif1.db"
        if path.is_file():
            return path
    raise FileNotFoundError(f"larixite has no amcsd_cif1.db: {LARIXITE_HINT}")


def decode_farray(encoded: str) -> np.ndarray:
    """Decode a base64 ``int32`` array scaled by 4e6; ``?`` and ``.`` (2.0, 3.0) become NaN."""
    values = np.frombuffer(base64.b64decode(encoded), dtype="<i4") / FARRAY_SCALE
    unknown = (np.abs(values - 2.0) < 1e-5) | (np.abs(values - 3.0) < 1e-5)
    return np.where(unknown, np.nan, values)


def encode_farray(values: np.ndarray) -> str:
    """Inverse of :func:`decode_farray` (NaN encodes as ``?``); used to build test databases."""
    values = np.where(np.isnan(values), 2.0, values)
    scaled = np.round(np.asarray(values, dtype=float) * FARRAY_SCALE).astype("<i4")
    return base64.b64encode(scaled.tobytes()).decode("ascii")


def split_title(raw: str) -> tuple[str, list[str]]:
    """Split an AMCSD ``pub_title`` into the paper title and appended annotation lines.

    The database wraps titles at about 80 characters and appends notes on further lines
    (``Note: ...``, ``Sample: ...``, ``_cod_database_code 1008152``, ``T = 895 C``,
    ``sample M-6591, ...``). A line continues the title when the previous line was wrapped (long,
    or ends with a connecting word or punctuation) or it starts like running text; the first line
    that looks like an annotation, and everything after it, is an annotation.

    Returns:
        ``(title, conditions)``: the title on one line, and the annotation lines.
    """
    lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
    if not lines or _HEADER_ANNOTATION.match(lines[0]):
        return "", lines
    title = [lines[0]]
    for position, line in enumerate(lines[1:], start=1):
        if _is_annotation(title[-1], line):
            return _join(title), lines[position:]
        title.append(line)
    return _join(title), []


def _is_annotation(previous: str, line: str) -> bool:
    """Whether ``line`` (following title line ``previous``) starts the annotations."""
    if _ANNOTATION.match(line):
        return True
    if _CONTINUES_AFTER.search(previous) or _CONTINUES_WITH.match(line):
        return False
    if _is_running_text(line):
        return False
    if _STRUCTURE_TYPE.fullmatch(line):
        return True
    wrapped = len(previous) + 1 + len(line.split()[0]) >= WRAP_WIDTH
    subtitle = previous.endswith(".") and _SUBTITLE.match(line)
    return not (wrapped or subtitle)


def _is_running_text(line: str) -> bool:
    """Four or more words including a function word: a sentence, not a sample label."""
    words = line.lower().split()
    return len(words) >= 4 and not _FUNCTION_WORDS.isdisjoint(words)


def _join(lines: list[str]) -> str:
    """Join wrapped lines; a line ending in a hyphen joins without a space (``Ramsdellite-``)."""
    text = lines[0]
    for line in lines[1:]:
        text += line if text.endswith("-") and not text.endswith(" -") else " " + line
    return text


def parse_number(text: str) -> float:
    """A CIF number such as ``5.93(2)``, ``3,2518`` or ``6.4235,``; NaN when unreadable."""
    text = text.split("(")[0].strip().rstrip(",")
    if "," in text and "." not in text:
        text = text.replace(",", ".")
    try:
        return float(text)
    except ValueError:
        return float("nan")


def label_element(label: str, allowed: set[str]) -> str:
    """Element of an AMCSD site label (``Si1``, ``O2a``, ``Fe3+``, ``Wat``, ``OH``, ``CuIT1``).

    ``allowed`` is the set of elements the database lists for the structure (may be empty):
    between a two-letter and a one-letter reading, the one in ``allowed`` wins.

    Raises:
        CifError: ``unknown_element``.
    """
    letters = re.sub(r"[^A-Za-z]", "", label)
    if letters.upper() in _LABEL_ALIASES and letters.upper() not in {e.upper() for e in allowed}:
        return _LABEL_ALIASES[letters.upper()]
    if letters.upper().startswith("WAT") and "W" not in allowed:
        return "O"  # water molecules labelled Watd, WatM3, Wat-Int: not tungsten
    candidates = [c for c in (letters[:2].capitalize(), letters[:1].upper()) if c]
    candidates = [c for c in candidates if Element.is_valid_symbol(c) or c in _LABEL_ALIASES]
    for candidate in candidates:
        if candidate in allowed:
            return candidate
    for candidate in candidates:
        if not allowed or letters[:2] == candidate:
            return _LABEL_ALIASES.get(candidate, candidate)
    if candidates:
        return _LABEL_ALIASES.get(candidates[-1], candidates[-1])
    raise CifError("unknown_element", f"site label {label!r} names no element")


def iter_rows(db: str | Path) -> Iterator[AmcsdRow]:
    """Stream the structures of an AMCSD database, ordered by id."""
    connection = sqlite3.connect(f"file:{Path(db)}?mode=ro", uri=True)
    try:
        authors = _authors(connection)
        elements = _elements(connection)
        query = """
            SELECT c.id, c.pub_title, m.name, p.id, p.journalname, p.volume, p.year,
                   p.page_first, c.a, c.b, c.c, c.alpha, c.beta, c.gamma,
                   s.symmetry_xyz, c.atoms_sites, c.atoms_x, c.atoms_y, c.atoms_z,
                   c.atoms_occupancy, c.formula
            FROM cif c
            LEFT JOIN minerals m ON m.id = c.mineral_id
            LEFT JOIN publications p ON p.id = c.publication_id
            LEFT JOIN spacegroups s ON s.id = c.spacegroup_id
            ORDER BY c.id"""
        for row in connection.execute(query):
            yield _row(row, authors, elements)
    finally:
        connection.close()


def _authors(connection: sqlite3.Connection) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    query = """SELECT pa.publication_id, a.name FROM publication_authors pa
               JOIN authors a ON a.id = pa.author_id ORDER BY pa.rowid"""
    for publication, name in connection.execute(query):
        out.setdefault(publication, []).append(name)
    return out


def _elements(connection: sqlite3.Connection) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for cif_id, element in connection.execute("SELECT cif_id, element FROM cif_elements"):
        out.setdefault(str(cif_id), set()).add(element)
    return out


def _row(row: tuple, authors: dict[int, list[str]], elements: dict[str, set[str]]) -> AmcsdRow:
    (cif_id, title, mineral, pub_id, journal, volume, year, page_first) = row[:8]
    cell, (symops, labels, x, y, z, occupancy, formula) = list(row[8:14]), row[14:]
    frac = np.stack([decode_farray(x), decode_farray(y), decode_farray(z)], axis=1)
    return AmcsdRow(
        id=int(cif_id),
        title=title or "",
        mineral=mineral if mineral and mineral != "<missing>" else "",
        journal=journal or "",
        volume=str(volume or ""),
        year=int(year) if year else None,
        page_first=str(page_first or ""),
        authors=authors.get(pub_id, []),
        cell=[str(value) for value in cell],
        symops=json.loads(symops) if symops else ["x,y,z"],
        labels=json.loads(labels),
        frac=frac,
        occupancies=None if occupancy in (None, "0", 0) else decode_farray(occupancy),
        elements=elements.get(str(cif_id), set()),
        formula=(formula or "").strip(),
    )


def row_to_cif(row: AmcsdRow) -> str:
    """A minimal CIF (cell, symmetry operations, atom sites, and AMCSD's formula as
    ``_chemical_formula_sum`` so that the reader checks the sites against it) of one row.

    Raises:
        CifError: ``unknown_element`` for a label naming no element, ``non_finite`` for an
            unreadable cell or coordinate.
    """
    cell = [parse_number(value) for value in row.cell]
    if not np.isfinite(cell).all() or not np.isfinite(row.frac).all():
        raise CifError("non_finite", f"amcsd-{row.id}: unreadable cell {row.cell} or coordinates")
    lines = [f"data_amcsd_{row.id}"]
    tags = ("a", "b", "c")
    lines += [f"_cell_length_{tag} {value:.6f}" for tag, value in zip(tags, cell[:3], strict=True)]
    tags = ("alpha", "beta", "gamma")
    lines += [f"_cell_angle_{tag} {value:.6f}" for tag, value in zip(tags, cell[3:], strict=True)]
    if row.formula and "'" not in row.formula:
        lines.append(f"_chemical_formula_sum '{row.formula}'")
    lines += ["loop_", "_space_group_symop_operation_xyz"]
    lines += [f"'{op.strip()}'" for op in row.symops]
    lines += ["loop_", "_atom_site_label", "_atom_site_type_symbol"]
    lines += [f"_atom_site_fract_{axis}" for axis in "xyz"] + ["_atom_site_occupancy"]
    occupancies = row.occupancies if row.occupancies is not None else np.ones(len(row.labels))
    for index, label in enumerate(row.labels):
        try:
            element = label_element(label, row.elements)
        except CifError as err:
            raise CifError(err.reason, f"amcsd-{row.id}: {err.message}") from None
        x, y, z = row.frac[index]
        occ = occupancies[index]
        occ_text = "." if np.isnan(occ) else f"{occ:.6f}"
        lines.append(f"A{index} {element} {x:.6f} {y:.6f} {z:.6f} {occ_text}")
    return "\n".join(lines) + "\n"


def row_group(row: AmcsdRow, title: str) -> str:
    """Paper key: ``amcsd-pub:<journal>|<volume>|<page_first>``, else the normalised title."""
    if row.journal and row.volume and row.page_first:
        return f"amcsd-pub:{row.journal}|{row.volume}|{row.page_first}"
    return paper_group(None, title, f"amcsd-{row.id}")


def row_to_record(
    row: AmcsdRow,
    *,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    max_cell_atoms: int | None = None,
    occupancy: OccupancyPolicy = "mixed",
    check_formula: bool = True,
) -> CrystalRecord | Reject:
    """Convert one database row to a record; never raises.

    Disorder follows ``occupancy`` (see :mod:`clasp_pl.data.cif_sites`); with ``check_formula``
    the sites must agree with AMCSD's formula (``formula_mismatch`` otherwise; see
    :mod:`clasp_pl.data.formula`). Coordinates are rounded to 5 decimals (≈ 1e-4 Å for a 10 Å
    cell) to keep the file small.
    """
    record_id = f"amcsd-{row.id}"
    try:
        parsed = parse_cif(
            row_to_cif(row),
            record_id,
            max_atoms=max_atoms,
            max_cell_atoms=max_cell_atoms,
            occupancy=occupancy,
            check_stated_formula=check_formula,
        )
    except CifError as err:
        return err.to_reject(f"amcsd:{row.id}", record_id)
    title, conditions = split_title(row.title)
    if not title:
        return Reject(f"amcsd:{row.id}", record_id, "missing_text", f"{record_id}: no title")
    if _IMPRINT.search(title):
        return Reject(
            f"amcsd:{row.id}",
            record_id,
            "missing_text",
            f"{record_id}: the title field holds a book imprint ({title!r}), not a paper title",
        )
    sites = parsed.sites
    return CrystalRecord.from_sites(
        record_id,
        sites.lattice,
        sites.frac,
        sites.species,
        sites.occupancies,
        decimals=5,
        title=title,
        group=row_group(row, title),
        source=f"amcsd:{row.id}",
        meta={**_meta(row, conditions), **resolution_meta(parsed)},
    )


def _meta(row: AmcsdRow, conditions: list[str]) -> dict:
    meta = {
        "amcsd_id": row.id,
        "mineral": row.mineral,
        "journal": row.journal,
        "year": row.year,
        "volume": row.volume,
        "page_first": row.page_first,
        "authors": row.authors,
    }
    if conditions:
        meta["conditions"] = conditions
    return meta


def build_default(
    db: str | Path | None,
    out: str | Path,
    *,
    max_atoms: int = DEFAULT_MAX_ATOMS,
    max_cell_atoms: int | None = None,
    occupancy: OccupancyPolicy = "mixed",
    check_formula: bool = True,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the default records file from an AMCSD database (larixite's when ``db`` is None).

    ``max_cell_atoms``, ``occupancy`` and ``check_formula`` are those of :func:`row_to_record`.

    Writes ``out``, its rejects (``<name>.rejects.jsonl``) and ``<name>.sha256`` (the SHA-256 of
    ``out``) next to it.

    Returns:
        The summary of :func:`~clasp_pl.data.ingest.write_outputs` plus ``papers`` (distinct
        groups), ``db``, ``sha256`` and ``bytes`` (size of ``out``).
    """
    db = Path(db) if db else find_default_db()
    if not db.is_file():
        raise FileNotFoundError(f"no AMCSD database at {db}: {LARIXITE_HINT}")
    out = Path(out)
    rows = list(iter_rows(db))
    convert = partial(
        row_to_record,
        max_atoms=max_atoms,
        max_cell_atoms=max_cell_atoms,
        occupancy=occupancy,
        check_formula=check_formula,
    )
    groups: set[str] = set()

    def noted(results: Iterator[CrystalRecord | Reject]) -> Iterator[CrystalRecord | Reject]:
        for result in results:
            if isinstance(result, CrystalRecord):
                groups.add(result.group)
            yield result

    results = parallel_map(convert, rows, workers=workers, progress=progress, desc="amcsd")
    summary = write_outputs(noted(results), out, None)
    digest = file_fingerprint(out)
    sha_path = out.with_name(out.name.removesuffix(".gz").removesuffix(".jsonl") + ".sha256")
    sha_path.write_text(f"{digest}  {out.name}\n", encoding="utf-8")
    summary.update(papers=len(groups), db=str(db), sha256=digest, bytes=out.stat().st_size)
    return summary
