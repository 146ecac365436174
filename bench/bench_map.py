"""Benchmark: `clasp map` build time and page load time for 8.5k and 100k points.

The embeddings are synthetic: ``N`` L2-normalised 256-d vectors drawn around 60 random centres
(clustered like a trained model's, so t-SNE has structure to find). The points are the real
AMCSD default records (id, formula, title, year, mineral, chemical class), cycled with a suffix on
the id past 8,505 so hover labels have realistic lengths; the colour is the chemical class.
Reported per size:

- t-SNE: the projection, uncached (landmark t-SNE past ``fit_limit`` = 10,000 points), wall
  seconds, and the CPU seconds of the whole first build (projection + page);
- page: figure + HTML write with cached coordinates (what a redraw in other colours costs);
- HTML size;
- load: headless Chromium (software WebGL) from navigation until plotly has drawn the WebGL
  canvas, when Chromium and chromedriver are installed (else "n/a").

Usage: ``python bench/bench_map.py [--sizes 8505 100000] [--out FILE]``
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from tables import emit_table

from clasp_pl.data.records import iter_records
from clasp_pl.resources import DEFAULT_RECORDS
from clasp_pl.viz import write_embedding_map
from clasp_pl.viz.embedding_map import MapTimings
from clasp_pl.viz.points import MapPoint, chemical_class_of

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "browser"))  # the browser tests' Chromium driver
from browser_pages import chrome, chromium_paths, wait_for  # noqa: E402

DIM = 256
CLUSTERS = 60
DRAWN = (
    "const gd = document.getElementById('clasp-map');"
    "return gd && gd._fullLayout && gd.querySelector('canvas') !== null && gd._fullLayout._size;"
)


def synthetic_embeddings(n: int, seed: int = 0) -> np.ndarray:
    """``[n, DIM]`` float16 L2-normalised vectors around :data:`CLUSTERS` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, DIM))
    vectors = centres[rng.integers(0, CLUSTERS, n)] + 0.6 * rng.normal(size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float16)


def default_points(n: int) -> list[MapPoint]:
    """``n`` points from the default records, cycled (ids suffixed ``#2``, ``#3``, ...)."""
    base = [
        MapPoint(
            id=r.id,
            formula=r.composition.reduced_formula,
            spacegroup="?",
            mineral=str(r.meta.get("mineral") or ""),
            title=r.title,
            year=r.meta.get("year"),
            crystal_system="unknown",
            chemical_class=chemical_class_of(r.composition.reduced_formula),
        )
        for r in iter_records(REPO / DEFAULT_RECORDS)
    ]
    cycled = itertools.islice(itertools.cycle(base), n)
    return [
        p if i < len(base) else replace(p, id=f"{p.id}#{i // len(base) + 1}")
        for i, p in enumerate(cycled)
    ]


def browser_load(html: Path) -> float | None:
    """Seconds from navigation until the WebGL scatter is drawn; None without Chromium."""
    if chromium_paths() is None:
        return None
    driver = chrome()
    try:
        start = time.perf_counter()
        driver.get(html.as_uri())
        wait_for(driver, DRAWN, timeout=300)
        return time.perf_counter() - start
    finally:
        driver.quit()


def run(sizes: list[int]) -> list[dict]:
    rows = []
    all_points = default_points(max(sizes))
    with tempfile.TemporaryDirectory() as folder:
        for n in sizes:
            embeddings, points = synthetic_embeddings(n), all_points[:n]
            cache, html = Path(folder) / f"cache-{n}", Path(folder) / f"map-{n}.html"
            first, again = MapTimings(), MapTimings()
            cpu = time.process_time()
            write_embedding_map(
                embeddings, points, html, colouring="chemical_class", cache_dir=cache, timings=first
            )
            cpu = time.process_time() - cpu
            write_embedding_map(
                embeddings, points, html, colouring="year", cache_dir=cache, timings=again
            )
            rows.append(
                {
                    "n": n,
                    "tsne": first.projection,
                    "cpu": cpu,
                    "page": again.html,
                    "cached": again.projection,
                    "mb": html.stat().st_size / 1e6,
                    "load": browser_load(html),
                }
            )
            print(rows[-1], flush=True)
    return rows


def markdown(rows: list[dict], load: float) -> str:
    header = (
        f"### clasp map: synthetic {DIM}-d embeddings, AMCSD points ({os.cpu_count()} CPUs, "
        f"torch {torch.__version__})\n\n"
        f"Load average at the start: {load:.1f} (wall times stretch on a shared "
        "machine; CPU seconds of this process do not).\n\n"
        "| points | t-SNE s (uncached) | first build CPU s | page s (cached coordinates) "
        "| coordinates from cache s | HTML MB | Chromium load s |\n"
        "|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['n']:,} | {r['tsne']:.1f} | {r['cpu']:.1f} | {r['page']:.2f} | {r['cached']:.3f} | {r['mb']:.1f} | "
        + ("n/a (no chromium)" if r["load"] is None else f"{r['load']:.1f}")
        + " |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8505, 100_000])
    parser.add_argument("--out", help="append the Markdown table to this file")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    table = markdown(run(args.sizes), load)
    emit_table(table, args.out)


if __name__ == "__main__":
    main()
