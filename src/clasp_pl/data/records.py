"""Parsed records: one crystal structure with the text of the paper that reported it.

This is the hand-off format between ingestion (CIF files, tables, the AMCSD default) and
featurization. Records are stored as gzip-compressed JSON Lines, one record per line, so a
dataset of 400k structures streams without loading everything at once.

A structure is stored ordered (one element per site; disorder is resolved at ingestion by the
occupancy policy) as a 3x3 lattice matrix in Å (rows are the lattice vectors), fractional
coordinates ``[n_sites, 3]`` and element symbols ``[n_sites]``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Lattice, Structure

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
        species: element symbol of each site, ``[n_sites]``.
        frac_coords: fractional coordinates, ``[n_sites, 3]``.
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

    @property
    def has_text(self) -> bool:
        return bool(self.title.strip() or self.abstract.strip() or self.keywords)

    @property
    def num_sites(self) -> int:
        return len(self.species)

    @property
    def composition(self) -> Composition:
        """Composition of the cell (site counts per element)."""
        return Composition(Counter(self.species))

    def to_structure(self) -> Structure:
        """The pymatgen ``Structure`` this record describes."""
        return Structure(Lattice(self.lattice), self.species, self.frac_coords)

    @classmethod
    def from_structure(cls, record_id: str, structure: Structure, **text) -> CrystalRecord:
        """Build a record from an ordered pymatgen structure plus text fields."""
        if not structure.is_ordered:
            raise ValueError(f"{record_id}: structure must be ordered before it becomes a record")
        return cls(
            id=record_id,
            lattice=np.round(structure.lattice.matrix, 6).tolist(),
            species=[site.specie.symbol for site in structure],
            frac_coords=np.round(structure.frac_coords, 6).tolist(),
            **text,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> CrystalRecord:
        return cls(**json.loads(line))


def write_records(records: Iterable[CrystalRecord], path: str | Path) -> int:
    """Write records as gzip JSON Lines atomically (temp file, then rename). Returns the count.

    The gzip header carries no name or timestamp, so the same records give the same bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile("", "wb", 9, raw, mtime=0) as zipped,
        io.TextIOWrapper(zipped, encoding="utf-8") as handle,
    ):
        for record in records:
            handle.write(record.to_json() + "\n")
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
