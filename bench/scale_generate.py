"""Scale data: N crystal-text records and their CIF folder, made by perturbing real structures.

Every structure is a real default (AMCSD) structure with

- a random symmetric strain of its lattice, each component within ±``--strain`` (3%);
- each element swapped, with probability ``--swap``, for another of its periodic-table group
  (the same row of the f block for lanthanides and actinides), the same everywhere in the cell;
- a supercell (``na × nb × nc``, each 1 to 4) when the size drawn for it needs one: sizes are
  drawn from a log-normal like COD's (median ``--median-sites`` 70, ``--sigma`` 1.1: about 17%
  above 200 sites and 4% above 500), capped at ``--max-sites`` (1,000, the cap of the authors'
  dataset code); the base structure is the one nearest in size among 8 random draws.

Structures come in papers of 1 + Poisson(0.8) structures (COD has a few per paper), all
perturbations of structures of one real paper, under one title: the real title with 1 + Poisson(1)
word-level edits (a word deleted, doubled, swapped with its neighbour, or replaced by a word of
another real title). The paper key of a record is its title's (no DOI), as ingestion computes it.

Output (``--out DIR``):

- ``DIR/cif/9/00/00/9000000.cif``...: one P1 CIF per structure in the COD mirror layout (ids
  from 9000000), with ``_publ_section_title`` and ``_chemical_formula_sum``, one row per species
  of a mixed site; ``clasp data ingest DIR/cif --max-atoms 1000`` reads them;
- ``DIR/records.jsonl.gz``: the same structures as records (what ingestion makes of the CIFs, up
  to coordinate rounding; ``source`` is the CIF's path relative to ``DIR``, ``meta`` keeps the
  base id, supercell and swaps).

Deterministic by seed: chunk ``k`` of ``--chunk`` structures is drawn from its own generator
``(seed, k)``, so the output does not depend on ``--workers``, and the first ``n`` structures of a
larger run equal a run of ``n`` (for ``n`` a multiple of the chunk).

Usage: ``python bench/scale_generate.py --n 25000 --out data/scale/25k [--seed 0] [--workers 2]``
"""

from __future__ import annotations

import argparse
import functools
import logging
import multiprocessing
import shutil
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Element

from clasp_pl.data.records import (
    CrystalRecord,
    iter_records,
    paper_group,
    write_record_lines,
)
from clasp_pl.resources import DEFAULT_RECORDS

log = logging.getLogger(__name__)
FIRST_ID = 9_000_000
SUPERCELL_SHAPES = sorted(
    ((a, b, c) for a in range(1, 5) for b in range(1, a + 1) for c in range(1, b + 1)),
    key=lambda shape: (shape[0] * shape[1] * shape[2], shape[0] - shape[2]),
)


@dataclass(frozen=True)
class ScaleOptions:
    """How structures are drawn (see the module docstring; sites are per cell)."""

    seed: int = 0
    strain: float = 0.03
    swap: float = 0.25
    median_sites: float = 70.0
    sigma: float = 1.1
    max_sites: int = 1000
    chunk: int = 500


class BaseData:
    """The real structures the scale data perturbs, grouped by paper, and the title words."""

    def __init__(self, records: Sequence[CrystalRecord]) -> None:
        self.records = [r for r in records if r.title.strip()]
        self.sites = np.array([r.num_sites for r in self.records])
        papers: dict[str, list[int]] = defaultdict(list)
        for index, record in enumerate(self.records):
            papers[record.group].append(index)
        self.paper_of = [papers[r.group] for r in self.records]
        self.words = [word for r in self.records for word in r.title.split()]

    @classmethod
    def default(cls) -> BaseData:
        return cls(list(iter_records(DEFAULT_RECORDS)))


@functools.cache
def swap_partners() -> dict[str, list[str]]:
    """``{element: other elements of its group}`` over the stable elements up to Bi, Th and U
    (no H, no noble gases); the f block pairs by row."""
    elements = [Element.from_Z(z) for z in (*range(3, 84), 90, 92)]
    families: dict[tuple, list[str]] = defaultdict(list)
    for element in elements:
        if element.symbol in ("Tc", "Pm") or element.group == 18:
            continue
        key = ("f", element.row) if element.block == "f" else ("group", element.group)
        families[key].append(element.symbol)
    return {s: [o for o in family if o != s] for family in families.values() for s in family}


def strained_lattice(lattice: np.ndarray, rng: np.random.Generator, strain: float) -> np.ndarray:
    """``lattice [3, 3]`` (Å, rows) under a symmetric strain with components within ±strain."""
    upper = np.triu(rng.uniform(-strain, strain, (3, 3)))
    epsilon = upper + np.triu(upper, 1).T
    return lattice @ (np.eye(3) + epsilon)


def supercell_shape(multiple: int) -> tuple[int, int, int]:
    """The most even ``(na, nb, nc)`` whose product is nearest ``multiple``."""
    return min(SUPERCELL_SHAPES, key=lambda s: (abs(s[0] * s[1] * s[2] - multiple), s[0] - s[2]))


def perturbed(
    record: CrystalRecord,
    rng: np.random.Generator,
    options: ScaleOptions,
    partners: dict[str, list[str]],
    target_sites: float,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, float]], dict]:
    """One perturbation of ``record``: lattice ``[3, 3]`` Å, fractional ``[n, 3]``, the
    ``{element: occupancy}`` of each site (largest first) and what was done (for ``meta``)."""
    sites = record.occupancies or [{element: 1.0} for element in record.species]
    swaps = {}
    present = {element for site in sites for element in site}
    for element in sorted(present):
        choices = [p for p in partners.get(element, []) if p not in present]
        if choices and rng.random() < options.swap:
            swaps[element] = choices[rng.integers(len(choices))]
    sites = [{swaps.get(e, e): occupancy for e, occupancy in site.items()} for site in sites]
    most = max(1, options.max_sites // record.num_sites)
    shape = supercell_shape(min(most, max(1, round(target_sites / record.num_sites))))
    if np.prod(shape) > most:
        shape = (1, 1, 1)
    repeats = np.array(shape)
    shifts = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    frac = np.asarray(record.frac_coords) % 1.0
    frac = ((frac[None, :, :] + shifts[:, None, :]) / repeats).reshape(-1, 3)
    lattice = strained_lattice(np.asarray(record.lattice) * repeats[:, None], rng, options.strain)
    meta = {"base": record.id, "supercell": list(shape), "swaps": swaps}
    return lattice, frac, sites * len(shifts), meta


def edited_title(title: str, rng: np.random.Generator, words: Sequence[str]) -> str:
    """``title`` with 1 + Poisson(1) word-level edits (delete, double, swap, replace)."""
    tokens = title.split()
    for _ in range(1 + rng.poisson(1.0)):
        at = int(rng.integers(len(tokens)))
        kind = rng.integers(4)
        if kind == 0 and len(tokens) > 3:
            del tokens[at]
        elif kind == 1:
            tokens.insert(at, tokens[at])
        elif kind == 2 and at + 1 < len(tokens):
            tokens[at], tokens[at + 1] = tokens[at + 1], tokens[at]
        else:
            tokens[at] = words[rng.integers(len(words))]
    return " ".join(tokens)


def cif_text(
    cod_id: str, title: str, lattice: np.ndarray, frac: np.ndarray, sites: list[dict[str, float]]
) -> str:
    """A P1 CIF of the structure: cell, identity operation, one row per (site, species)."""
    lengths = np.linalg.norm(lattice, axis=1)
    a, b, c = lattice
    angles = [
        np.degrees(np.arccos(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v))))
        for u, v in ((b, c), (a, c), (a, b))
    ]
    amounts: dict[str, float] = defaultdict(float)
    for site in sites:
        for element, occupancy in site.items():
            amounts[element] += occupancy
    formula = " ".join(f"{e}{round(n, 4):g}" for e, n in sorted(amounts.items()))
    lines = [f"data_{cod_id}", "_publ_section_title", ";", title, ";"]
    lines += [f"_cell_length_{t} {v:.6f}" for t, v in zip("abc", lengths, strict=True)]
    names = ("alpha", "beta", "gamma")
    lines += [f"_cell_angle_{t} {v:.6f}" for t, v in zip(names, angles, strict=True)]
    lines += [f"_chemical_formula_sum '{formula}'", "_symmetry_space_group_name_H-M 'P 1'"]
    lines += ["loop_", "_symmetry_equiv_pos_as_xyz", "x,y,z"]
    lines += ["loop_", "_atom_site_label", "_atom_site_type_symbol"]
    lines += [f"_atom_site_fract_{axis}" for axis in "xyz"] + ["_atom_site_occupancy"]
    for index, (site, (x, y, z)) in enumerate(zip(sites, frac, strict=True)):
        for element, occupancy in site.items():
            lines.append(f"{element}{index} {element} {x:.6f} {y:.6f} {z:.6f} {occupancy:.6f}")
    return "\n".join(lines) + "\n"


def cif_path(root: Path, cod_id: str) -> Path:
    """The COD mirror layout: ``9000041`` -> ``root/9/00/00/9000041.cif``."""
    return root / cod_id[0] / cod_id[1:3] / cod_id[3:5] / f"{cod_id}.cif"


def chunk_lines(
    base: BaseData, options: ScaleOptions, cif_root: Path | None, chunk: int, count: int
) -> list[str]:
    """Record JSON lines of structures ``chunk * options.chunk`` onwards (``count`` of them),
    writing their CIFs under ``cif_root`` when given."""
    rng = np.random.default_rng([options.seed, chunk])
    partners = swap_partners()
    lines: list[str] = []
    log_median = np.log(options.median_sites)
    while len(lines) < count:
        target = float(np.exp(rng.normal(log_median, options.sigma)))
        candidates = rng.integers(len(base.records), size=8)
        closest = candidates[np.argmin(np.abs(np.log(base.sites[candidates] / target)))]
        paper = base.paper_of[closest]
        title = edited_title(base.records[closest].title, rng, base.words)
        for _ in range(min(1 + rng.poisson(0.8), count - len(lines))):
            record = base.records[paper[rng.integers(len(paper))]]
            size = float(np.exp(rng.normal(log_median, options.sigma)))
            lattice, frac, sites, meta = perturbed(record, rng, options, partners, size)
            cod_id = str(FIRST_ID + chunk * options.chunk + len(lines))
            if cif_root is not None:
                path = cif_path(cif_root, cod_id)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(cif_text(cod_id, title, lattice, frac, sites))
            made = CrystalRecord.from_sites(
                cod_id,
                lattice,
                frac,
                [next(iter(site)) for site in sites],
                sites if any(len(s) > 1 or max(s.values()) < 1 for s in sites) else [],
                title=title,
                group=paper_group(None, title, cod_id),
                source=str(cif_path(Path("cif"), cod_id)),  # relative to the output folder
                meta=meta,
            )
            lines.append(made.to_json() + "\n")
    return lines


_BASE: BaseData | None = None  # a worker's base data, loaded once


def _worker_chunk(options: ScaleOptions, cif_root: Path | None, job: tuple[int, int]) -> list[str]:
    global _BASE
    if _BASE is None:
        _BASE = BaseData.default()
    return chunk_lines(_BASE, options, cif_root, *job)


def generate(
    n: int,
    out: str | Path,
    options: ScaleOptions = ScaleOptions(),
    workers: int = 1,
    cifs: bool = True,
) -> Path:
    """Write ``n`` structures to ``out`` (``records.jsonl.gz`` and, with ``cifs``, ``cif/``);
    returns the records file. An existing ``out/cif`` is replaced."""
    out = Path(out)
    cif_root = out / "cif" if cifs else None
    if cif_root is not None:
        shutil.rmtree(cif_root, ignore_errors=True)
    jobs = [(k, min(options.chunk, n - k * options.chunk)) for k in range(-(-n // options.chunk))]
    work = functools.partial(_worker_chunk, options, cif_root)

    def lines() -> Iterator[str]:
        if workers > 1:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for chunk in pool.imap(work, jobs):
                    yield from chunk
        else:
            for job in jobs:
                yield from work(job)

    records = out / "records.jsonl.gz"
    count = write_record_lines(lines(), records)
    log.info("wrote %d structures to %s", count, out)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, required=True, help="structures to write")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-cifs", action="store_true", help="write the records file only")
    parser.add_argument("--max-sites", type=int, default=ScaleOptions.max_sites)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = ScaleOptions(seed=args.seed, max_sites=args.max_sites)
    generate(args.n, args.out, options, args.workers, cifs=not args.no_cifs)


if __name__ == "__main__":
    main()
