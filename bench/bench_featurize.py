"""Benchmark: CIF parsing and crystal-graph featurization, structures/s on one core.

Side by side, on the same real structures (perov_5 CIF strings from ../shared, and AMCSD
default structures written as CIFs):

- CIF → ordered structure: ``parse_cif(reader="gemmi")`` vs ``parse_cif(reader="pymatgen")``;
- structure → CGCNN graph (8 Å, 12 neighbours):
  (a) this pipeline (``structure_to_graph``: compiled neighbour list + vectorised selection),
  (b) the CGCNN reference style (``Structure.get_all_neighbors`` then a Python sort per atom),
  (c) the raw ``Structure.get_neighbor_list`` call alone (the floor).

Usage: ``python bench/bench_featurize.py [--n 1000] [--out FILE]``
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np
from pymatgen.io.cif import CifWriter
from tables import emit_table

from clasp_pl.data.cif import parse_cif
from clasp_pl.data.graphs import GraphConfig, structure_to_graph
from clasp_pl.data.records import iter_records

REPO = Path(__file__).resolve().parents[1]
PEROV = REPO.parent / "shared" / "data" / "perov_5" / "val.csv"


def reference_style_graph(structure, radius: float, max_neighbors: int):
    """The CGCNN reference's featurization loop: all neighbours per atom, sorted in Python."""
    all_neighbors = structure.get_all_neighbors(radius, include_index=True)
    all_neighbors = [sorted(nbrs, key=lambda n: n[1]) for nbrs in all_neighbors]
    index, distance = [], []
    for nbrs in all_neighbors:
        kept = nbrs[:max_neighbors]
        index.append([n[2] for n in kept] + [0] * (max_neighbors - len(kept)))
        distance.append([n[1] for n in kept] + [radius + 1.0] * (max_neighbors - len(kept)))
    return np.array(index), np.array(distance)


def rate(function, items) -> float:
    """Items per second of ``function`` over ``items`` (one pass, one process)."""
    start = time.perf_counter()
    for item in items:
        function(item)
    return len(items) / (time.perf_counter() - start)


def load_cifs(n: int) -> dict[str, list[str]]:
    with PEROV.open() as handle:
        perov = [row["cif"] for row in itertools.islice(csv.DictReader(handle), n)]
    default = [
        str(CifWriter(record.to_structure()))
        for record in itertools.islice(iter_records(REPO / "data/amcsd_default.jsonl.gz"), n)
    ]
    return {"perov_5 (5 sites)": perov, "AMCSD default (median 22 sites)": default}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="structures per dataset")
    parser.add_argument("--out", help="append the Markdown table to this file")
    args = parser.parse_args()
    config = GraphConfig()
    lines = [
        f"### CIF parsing and featurization ({args.n} structures per set, one process, "
        f"r = {config.radius} Å, {config.max_neighbors} neighbours)",
        "",
        "| dataset | gemmi CIFs/s | pymatgen CIFs/s | ratio | (a) pipeline graphs/s | "
        "(b) reference-style loop | (c) raw neighbour list | (a)/(b) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, cifs in load_cifs(args.n).items():
        gemmi_rate = rate(lambda text: parse_cif(text, "bench", reader="gemmi"), cifs)
        pymatgen_rate = rate(lambda text: parse_cif(text, "bench", reader="pymatgen"), cifs)
        structures = [parse_cif(text, "bench").structure for text in cifs]
        pipeline = rate(lambda s: structure_to_graph(s, config), structures)
        reference = rate(
            lambda s: reference_style_graph(s, config.radius, config.max_neighbors), structures
        )
        raw = rate(lambda s: s.get_neighbor_list(config.radius), structures)
        lines.append(
            f"| {name} | {gemmi_rate:.0f} | {pymatgen_rate:.0f} | {gemmi_rate / pymatgen_rate:.1f}× "
            f"| {pipeline:.0f} | {reference:.0f} | {raw:.0f} | {pipeline / reference:.1f}× |"
        )
    table = "\n".join(lines) + "\n"
    emit_table(table, args.out)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
