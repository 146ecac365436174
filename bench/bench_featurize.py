"""Benchmark: CIF parsing and crystal-graph featurization, structures/s on one core.

Side by side, on the same real structures (perov_5 CIF strings from ../shared, and AMCSD
default structures written as CIFs):

- CIF → ordered structure: ``parse_cif(reader="gemmi")`` vs ``parse_cif(reader="pymatgen")``;
- structure → CGCNN graph (8 Å, 12 neighbours):
  (a) this pipeline (``structure_to_graph``: compiled neighbour list + vectorised selection),
  (b) the CGCNN reference style (``Structure.get_all_neighbors`` then a Python sort per atom),
  (c) the raw ``Structure.get_neighbor_list`` call alone (the floor).

A second table times (a) on large cells (``--max-atoms 1000``): real default structures grown
to about 200, 500 and 1,000 sites (:mod:`large_cells`), with the memory per structure as the
stored graph's array bytes and the peak memory traced by ``tracemalloc`` while one graph is
built (numpy and Python allocations; pymatgen's neighbour list is numpy).

``--chgnet N`` adds one line: frozen CHGNet crystal features
(:mod:`clasp_pl.data.chgnet_features`, the optional extra) of the first N default records,
structures/s in one process with one torch thread, its graph building also timed alone.

Usage: ``python bench/bench_featurize.py [--n 1000] [--large-count 4] [--large-only]
[--chgnet N] [--out FILE]``
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from large_cells import large_sets
from pymatgen.core import Structure
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


def graph_cost(structure: Structure, config: GraphConfig) -> tuple[float, int, int]:
    """Seconds to build one graph (best of 3), its array bytes and the peak traced bytes while
    building it."""
    seconds = min(
        rate(lambda s: structure_to_graph(s, config), [structure]) ** -1 for _ in range(3)
    )
    tracemalloc.start()
    graph = structure_to_graph(structure, config)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, sum(array.nbytes for array in vars(graph).values()), peak


def large_cell_table(count: int, config: GraphConfig) -> str:
    """Graph building time and memory per structure at about 200, 500 and 1,000 sites."""
    lines = [
        f"### Featurization of large cells ({count} real default structures grown to each size, "
        f"r = {config.radius} Å, {config.max_neighbors} neighbours, one process; load average "
        f"{os.getloadavg()[0]:.1f} at the start)",
        "",
        "| target sites | mean sites | mean edges | s per structure | graphs/s "
        "| graph MiB per structure (array bytes) | peak traced MiB per structure (tracemalloc) |",
        "|---|---|---|---|---|---|---|",
    ]
    for size, structures in large_sets(count).items():
        costs = np.array([graph_cost(s, config) for s in structures], dtype=float)
        edges = np.mean([len(structure_to_graph(s, config).edge_src) for s in structures])
        seconds, graph_bytes, peak = costs.mean(axis=0)
        lines.append(
            f"| {size} | {np.mean([len(s) for s in structures]):.0f} | {edges:.0f} "
            f"| {seconds:.3f} | {1 / seconds:.1f} | {graph_bytes / 2**20:.2f} | {peak / 2**20:.1f} |"
        )
    return "\n".join(lines) + "\n"


def chgnet_line(n: int) -> str:
    """CHGNet crystal features of the first ``n`` default records: structures/s, all told and
    for its graph building alone."""

    from clasp_pl.data.chgnet_features import ChgnetFeatures

    records = list(itertools.islice(iter_records(REPO / "data/amcsd_default.jsonl.gz"), n))
    structures = [record.to_ordered_structure() for record in records]
    features = ChgnetFeatures(batch_size=32, threads=1)  # the store builder's default
    features(structures[:2])  # load the model, warm up
    graphs_rate = rate(lambda s: features.graphs([s]), structures)
    start = time.perf_counter()
    rows, failures = features(structures)
    total = len(structures) / (time.perf_counter() - start)
    return (
        f"CHGNet crystal features ({rows.shape[1]}-d, model {features.model_name}, batch 32, "
        f"{features.threads} torch thread, load average {os.getloadavg()[0]:.1f}): "
        f"**{total:.1f} structures/s** over the first {n} default records (median "
        f"{int(np.median([len(s) for s in structures]))} sites; {len(failures)} failed); its graph "
        f"building alone {graphs_rate:.1f}/s.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="structures per dataset")
    parser.add_argument(
        "--large-count", type=int, default=4, help="structures per size in the large-cell table"
    )
    parser.add_argument("--large-only", action="store_true", help="only the large-cell table")
    parser.add_argument(
        "--chgnet", type=int, default=0, help="add the CHGNet features line over N records"
    )
    parser.add_argument("--out", help="append the Markdown tables to this file")
    args = parser.parse_args()
    config = GraphConfig()
    if args.chgnet:
        emit_table(chgnet_line(args.chgnet), args.out)
    if args.large_only:
        emit_table(large_cell_table(args.large_count, config), args.out)
        return
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
    emit_table(large_cell_table(args.large_count, config), args.out)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
