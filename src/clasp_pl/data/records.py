"""Parsed records: one crystal structure with the text of the paper that reported it.

This is the hand-off format between ingestion (CIF files, tables, the AMCSD default) and
featurization. Records are stored as gzip-compressed JSON Lines, one record per line, so a
dataset of 400k structures streams without loading everything at once.

A structure is stored as a 3x3 lattice matrix in Å (rows are the lattice vectors), fractional
coordinates ``[n_sites, 3]``, the element symbol of each site ``[n_sites]`` and, for a
disordered structure, the occupancies of each site (record format 2, :data:`RECORD_FORMAT_VERSION`):

- ``occupancies`` empty (and absent from the JSON line): the structure is ordered; site ``i`` is
  one ``species[i]`` atom. Every format-1 record reads this way.
- ``occupancies`` non-empty: one ``{element: occupancy}`` dict per site (values in (0, 1],
  rounded to 6 digits, summing to at most 1 up to that rounding; the missing weight is a
  vacancy), largest occupancy first. ``species[i]`` is site ``i``'s dominant element (its first
  key), so code that needs one label per site still has one.

Which structure to use:

- :meth:`CrystalRecord.to_structure` is the material as reported (a pymatgen ``Structure`` with
  disordered species where there is disorder): for composition, descriptors, occupancy-weighted
  atom features, output for users.
- :meth:`CrystalRecord.to_ordered_structure` puts the dominant element on every site at full
  occupancy: only for code that cannot handle disorder (a one-element-per-site graph, symmetry
  analysis with spglib); its composition is not the material's.
- :attr:`CrystalRecord.composition` is always the full, occupancy-weighted composition.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Lattice, Structure

RECORD_FORMAT_VERSION = 2  # 1: ordered only; 2: optional per-site occupancies
OCCUPANCY_DECIMALS = 6
_SPACES = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w\s]")


def normalise_title(title: str) -> str:
    """Lower-case, strip punctuation and collapse whitespace (used as a paper key)."""
    return _SPACES.sub(" ", _NON_WORD.sub(" ", title.lower())).strip()


def paper_group(doi: str | None, title: str | None, record_id: str) -> str:
    """The paper a record belongs to: its DOI, else its normalised title, else its own id."""
    if doi and doi.strip():
        return "doi:" + doi.strip().lower()
    if title and normalise_title(title):
        return "title:" + normalise_title(title)
    return "id:" + record_id


def stable_hash64(text: str) -> int:
    """A process- and platform-independent signed 64-bit hash of ``text`` (blake2b)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


@dataclass
class CrystalRecord:
    """One structure and its paper's text.

    Attributes:
        id: unique identifier (COD id, AMCSD id, table row id).
        lattice: lattice vectors as rows, ``[3, 3]`` in Å.
        species: element symbol of each site, ``[n_sites]``; the dominant element of a
            disordered site.
        frac_coords: fractional coordinates, ``[n_sites, 3]``.
        occupancies: ``[n_sites]`` dicts ``{element: occupancy}`` of a disordered structure,
            or empty for an ordered one (see the module docstring).
        title, abstract, keywords: text of the paper (may be empty for structure-only data).
        doi: DOI of the paper, when known.
        group: paper key shared by all structures of one paper (see :func:`paper_group`).
        source: file (and row) the record came from.
        meta: anything else worth keeping (year, journal, mineral, sample conditions, targets).
    """

    id: str
    lattice: list[list[float]]
    species: list[str]
    frac_coords: list[list[float]]
    occupancies: list[dict[str, float]] = field(default_factory=list)
    title: str = ""
    abstract: str = ""
    keywords: list[str] = field(default_factory=list)
    doi: str = ""
    group: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.group:
            self.group = paper_group(self.doi, self.title, self.id)
        if self.occupancies and len(self.occupancies) != len(self.species):
            raise ValueError(
                f"{self.id}: {len(self.occupancies)} occupancy entries for {len(self.species)} sites"
            )

    @property
    def has_text(self) -> bool:
        return bool(self.title.strip() or self.abstract.strip() or self.keywords)

    @property
    def num_sites(self) -> int:
        return len(self.species)

    @property
    def is_ordered(self) -> bool:
        """Whether every site is one element at full occupancy."""
        return all(len(site) == 1 and next(iter(site.values())) == 1.0 for site in self.occupancies)

    @property
    def composition(self) -> Composition:
        """Composition of the cell: occupancy-weighted amount of each element."""
        if not self.occupancies:
            return Composition(Counter(self.species))
        amounts: dict[str, float] = {}
        for site in self.occupancies:
            for element, occupancy in site.items():
                amounts[element] = amounts.get(element, 0.0) + occupancy
        return Composition(amounts)

    def to_structure(self) -> Structure:
        """The structure as reported: disordered sites carry their ``{element: occupancy}``."""
        species = self.occupancies if self.occupancies else self.species
        return Structure(Lattice(self.lattice), species, self.frac_coords)

    def to_ordered_structure(self) -> Structure:
        """An ordered stand-in: every site is its dominant element at full occupancy (not the
        material's composition when the record is disordered)."""
        return Structure(Lattice(self.lattice), self.species, self.frac_coords)

    @classmethod
    def from_sites(
        cls,
        record_id: str,
        lattice: np.ndarray,
        frac_coords: np.ndarray,
        species: list[str],
        occupancies: list[dict[str, float]] | None = None,
        *,
        decimals: int = 6,
        **text,
    ) -> CrystalRecord:
        """Build a record from arrays (lattice ``[3, 3]`` Å, fractional ``[n, 3]``), rounding
        coordinates to ``decimals`` and occupancies to ``OCCUPANCY_DECIMALS`` digits so that
        equal structures give equal bytes."""
        return cls(
            id=record_id,
            lattice=np.round(np.asarray(lattice, dtype=float), decimals).tolist(),
            species=list(species),
            frac_coords=np.round(np.asarray(frac_coords, dtype=float), decimals).tolist(),
            occupancies=[
                {
                    element: round(float(value), OCCUPANCY_DECIMALS)
                    for element, value in site.items()
                }
                for site in occupancies or []
            ],
            **text,
        )

    @classmethod
    def from_structure(cls, record_id: str, structure: Structure, **text) -> CrystalRecord:
        """Build a record from a pymatgen structure (ordered or disordered) plus text fields.

        Oxidation states are dropped (``Fe2+`` and ``Fe3+`` on one site add up to ``Fe``).
        """
        sites: list[dict[str, float]] = []
        for site in structure:
            amounts: dict[str, float] = {}
            for specie, occupancy in site.species.items():
                symbol = specie.symbol
                amounts[symbol] = amounts.get(symbol, 0.0) + float(occupancy)
            sites.append(dict(sorted(amounts.items(), key=lambda item: -item[1])))
        ordered = all(len(site) == 1 and next(iter(site.values())) == 1.0 for site in sites)
        return cls.from_sites(
            record_id,
            structure.lattice.matrix,
            structure.frac_coords,
            [next(iter(site)) for site in sites],
            [] if ordered else sites,
            **text,
        )

    def to_json(self) -> str:
        """One JSON line; ``occupancies`` is left out when empty (an ordered record reads the same
        in format 1 and 2)."""
        values = {name: getattr(self, name) for name in _FIELD_NAMES}  # no deep copy (asdict)
        if not self.occupancies:
            del values["occupancies"]
        return json.dumps(values, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> CrystalRecord:
        return cls(**json.loads(line))


_FIELD_NAMES = tuple(field.name for field in fields(CrystalRecord))


def write_records(records: Iterable[CrystalRecord], path: str | Path) -> int:
    """Write records as gzip JSON Lines atomically (temp file, then rename). Returns the count.

    The gzip header carries no name or timestamp, so the same records give the same bytes.
    """
    return write_record_lines((record.to_json() + "\n" for record in records), path)


def write_record_lines(lines: Iterable[str], path: str | Path) -> int:
    """Write JSON lines (each ending in a newline) as :func:`write_records` does; returns the
    number of lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile("", "wb", 9, raw, mtime=0) as zipped,
        io.TextIOWrapper(zipped, encoding="utf-8") as handle,
    ):
        for line in lines:
            handle.write(line)
            count += 1
    tmp.replace(path)
    return count


def iter_record_lines(path: str | Path) -> Iterator[str]:
    """Stream the non-empty JSON lines of a ``.jsonl.gz`` or ``.jsonl`` records file."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        yield from (line for line in handle if line.strip())


def iter_records(path: str | Path) -> Iterator[CrystalRecord]:
    """Stream records from a ``.jsonl.gz`` or ``.jsonl`` file."""
    return map(CrystalRecord.from_json, iter_record_lines(path))


def read_records(path: str | Path) -> list[CrystalRecord]:
    return list(iter_records(path))
