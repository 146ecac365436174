"""Benchmark: CIF ingestion CIFs/s per core with disorder kept, and the bounded 10k-atom file.

- **AMCSD CIFs** (the default data's source, larixite's ``amcsd_cif1.db``): each row as the CIF
  text the default build reads (cell, symmetry operations, sites with occupancies, formula),
  through the per-file ingestion path (``parse_cif`` with the ``mixed`` policy and the formula
  check, then the record and its JSON line), in one process. CIFs/s/core is the number of CIFs
  over the process's CPU time (``time.process_time``), the best of ``--repeat`` passes, so that
  other load on a shared machine counts as little as possible; wall-clock CIFs/s is shown too.
- **pymatgen reader**: the same path with ``reader="pymatgen"`` on the first ``--n-pymatgen``.
- **10,648-atom supercell** (NaCl 11 × 11 × 11, written by pymatgen's ``CifWriter``): time,
  peak traced memory (``tracemalloc``) and peak resident memory added (a fresh process) until it
  is rejected as ``too_many_atoms`` with the defaults (``max_atoms`` 200, ``max_cell_atoms``
  1,000).

Usage: ``python bench/bench_ingest.py [--n N] [--repeat 3] [--out FILE]``
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter
from tables import emit_table

from clasp_pl.data.amcsd import find_default_db, iter_rows, row_to_cif
from clasp_pl.data.cif import CifError, parse_cif
from clasp_pl.data.ingest import IngestOptions, Job, job_to_record


def amcsd_cifs(n: int | None) -> list[tuple[str, str]]:
    """``(name, CIF text)`` of the first ``n`` AMCSD rows that make a CIF."""
    cifs = []
    for row in iter_rows(find_default_db()):
        try:
            cifs.append((f"amcsd-{row.id}", row_to_cif(row)))
        except CifError:
            continue
        if n is not None and len(cifs) >= n:
            break
    return cifs


def ingest_pass(cifs: list[tuple[str, str]], options: IngestOptions) -> tuple[float, float, dict]:
    """``(cpu seconds, wall seconds, {kept/reason: count})`` of one pass over ``cifs``."""
    outcomes: collections.Counter[str] = collections.Counter()
    cpu, wall = time.process_time(), time.perf_counter()
    for name, text in cifs:
        result = job_to_record(Job(name, name, cif=text), options)
        if hasattr(result, "reason"):
            outcomes[result.reason] += 1
        else:
            result.to_json()
            outcomes["kept"] += 1
    return time.process_time() - cpu, time.perf_counter() - wall, dict(outcomes)


RSS_SCRIPT = """
import sys
from clasp_pl.data.cif import read_cif
def status(key):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(key))
before = status("VmRSS:")
read_cif(sys.argv[1])
print((status("VmHWM:") - before) / 1024)
"""


def supercell_cost() -> tuple[int, float, float, float, str]:
    """``(atoms, seconds, peak MiB traced, peak MiB resident added, reject reason)`` of the
    10,648-atom supercell; the resident figure is measured in a fresh process (peak resident
    size minus the resident size after the imports, C++ allocations included)."""
    rocksalt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    supercell = rocksalt * (11, 11, 11)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "supercell.cif"
        CifWriter(supercell).write_file(path)
        text = path.read_text()
        done = subprocess.run(
            [sys.executable, "-c", RSS_SCRIPT, str(path)], capture_output=True, text=True
        )
        resident = float(done.stdout.split()[-1]) if done.returncode == 0 else float("nan")
    tracemalloc.start()
    start = time.perf_counter()
    try:
        parse_cif(text, "supercell.cif")
        reason = "kept"
    except CifError as err:
        reason = err.reason
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return len(supercell), seconds, peak / 2**20, resident, reason


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="AMCSD CIFs (default: all)")
    parser.add_argument("--n-pymatgen", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best one counts")
    parser.add_argument("--out", help="append the Markdown table to this file")
    args = parser.parse_args()
    try:
        cifs = amcsd_cifs(args.n)
    except FileNotFoundError as err:
        print(f"skipped: {err}")
        return
    lines = [
        f"### CIF ingestion, one process ({len(cifs)} AMCSD CIFs, disorder kept: policy "
        "`mixed`, formula check on; best of "
        f"{args.repeat} passes)",
        "",
        "| reader | CIFs | CIFs/s/core (CPU time) | CIFs/s (wall) | kept | rejected |",
        "|---|---|---|---|---|---|",
    ]
    for reader, subset, repeat in (
        ("gemmi", cifs, args.repeat),
        ("pymatgen", cifs[: args.n_pymatgen], 1),
    ):
        options = IngestOptions(reader=reader, require_text=False)
        passes = [ingest_pass(subset, options) for _ in range(repeat)]
        cpu = min(p[0] for p in passes)
        wall = min(p[1] for p in passes)
        outcomes = passes[0][2]
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()) if k != "kept")
        lines.append(
            f"| {reader} | {len(subset)} | {len(subset) / cpu:.0f} | {len(subset) / wall:.0f} "
            f"| {outcomes.get('kept', 0)} | {rejected} |"
        )
    atoms, seconds, peak, resident, reason = supercell_cost()
    lines += [
        "",
        f"{atoms:,}-atom supercell CIF (NaCl 11×11×11, P1, written by CifWriter): `{reason}` "
        f"after {seconds:.3f} s; peak traced memory {peak:.0f} MiB, peak resident memory "
        f"added {resident:.0f} MiB (defaults: max_atoms 200, max_cell_atoms 1,000).",
    ]
    table = "\n".join(lines) + "\n"
    emit_table(table, args.out)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
