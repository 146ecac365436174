"""`clasp map`: points and their hover fields, colours, cached coordinates, query marks.

Runs on the shared tiny index of 60 real AMCSD structures (:mod:`helpers.viz`); the page itself
is opened in a real browser by ``tests/browser``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from clasp_pl.api import load_model
from clasp_pl.cli import main as clasp
from clasp_pl.data.records import read_records
from clasp_pl.search.index import EmbeddingIndex
from clasp_pl.viz import (
    embedding_map,
    index_map,
    index_points,
    projection,
    record_points,
    write_embedding_map,
)
from clasp_pl.viz.colouring import colour_by_field
from clasp_pl.viz.html import map_figure
from clasp_pl.viz.points import crystal_system_of
from clasp_pl.viz.projection import ProjectionConfig, project_2d
from clasp_pl.viz.queries import query_scores
from helpers.viz import N_RECORDS

CONFIG = ProjectionConfig()


@pytest.fixture(scope="module")
def xy(tiny_index) -> np.ndarray:
    return projection.cached_projection(
        EmbeddingIndex(tiny_index.folder).embeddings, tiny_index.folder / "map-cache"
    )


def figure_points(figure: dict) -> list[list[str]]:
    """Hover fields of every structure point of a figure (not the query marks' stars)."""
    return [
        row
        for trace in figure["data"]
        if trace["marker"].get("symbol") != "star"
        for row in trace["customdata"]
    ]


def test_space_group_symbols_give_crystal_systems() -> None:
    expected = {
        "P-1": "triclinic",
        "P2_1/c": "monoclinic",
        "Pnma": "orthorhombic",
        "I4_1/amd": "tetragonal",
        "R-3m": "trigonal",
        "P6_3/mmc": "hexagonal",
        "Fd-3m": "cubic",
        "?": "unknown",
    }
    assert {symbol: crystal_system_of(symbol) for symbol in expected} == expected


def test_every_structure_is_a_point_with_its_hover_fields(tiny_index, xy) -> None:
    points = index_points(tiny_index.folder)
    records = {r.id: r for r in read_records(tiny_index.records)}
    assert len(points) == N_RECORDS == len(xy)
    figure = map_figure(xy, points, colour_by_field(points, "crystal_system"))
    rows = figure_points(figure)
    assert sorted(row[0] for row in rows) == sorted(p.id for p in points)
    galena = next(row for row in rows if row[0] == "amcsd-3")
    assert galena[:4] == ["amcsd-3", "PbS", "Fm-3m", records["amcsd-3"].meta["mineral"]]
    assert galena[4].replace("<br>", " ") == records["amcsd-3"].title
    for trace in figure["data"]:  # one trace per crystal system, named with its count
        name, count = re.fullmatch(r"(\w+) \((\d+)\)", trace["name"]).groups()
        assert int(count) == len(trace["x"]) == sum(p.crystal_system == name for p in points)
        assert trace["type"] == "scattergl"


def test_year_colouring_uses_the_records_years(tiny_index, xy) -> None:
    points = index_points(tiny_index.folder)
    years = {r.id: r.meta["year"] for r in read_records(tiny_index.records)}
    figure = map_figure(xy, points, colour_by_field(points, "year"))
    (trace,) = figure["data"]  # every AMCSD record has a year: no "unknown" trace
    coloured = dict(
        zip((row[0] for row in trace["customdata"]), trace["marker"]["color"], strict=True)
    )
    assert coloured == pytest.approx({i: float(y) for i, y in years.items()})
    assert list(trace["marker"]["color"]) == sorted(trace["marker"]["color"])


def test_the_page_opens_offline(tiny_index, tmp_path) -> None:
    out = index_map(tiny_index.folder, tmp_path / "map.html")
    html = out.read_text()
    assert not re.search(r"<script[^>]+src=", html), "every script must be inline"
    assert "Plotly.newPlot" in html and len(html) > 3_000_000  # plotly.js itself is inside
    assert '"scattergl"' in html and "amcsd-3" in html


def test_coordinates_are_cached_per_embeddings(tiny_index, tmp_path, monkeypatch) -> None:
    index = EmbeddingIndex(tiny_index.folder)
    points = index_points(tiny_index.folder)
    calls = []
    real = projection.project_2d
    monkeypatch.setattr(projection, "project_2d", lambda e, c: calls.append(len(e)) or real(e, c))
    cache = tmp_path / "cache"
    write_embedding_map(index.embeddings, points, tmp_path / "a.html", cache_dir=cache)
    write_embedding_map(
        index.embeddings, points, tmp_path / "b.html", colouring="year", cache_dir=cache
    )
    assert calls == [N_RECORDS]  # the second map, other colours, reused the coordinates
    shifted = np.roll(np.asarray(index.embeddings), 1, axis=0)
    write_embedding_map(shifted, points, tmp_path / "c.html", cache_dir=cache)
    assert calls == [N_RECORDS, N_RECORDS] and len(list(cache.glob("xy-*.npy"))) == 2


def test_colour_by_query_is_its_learned_score(tiny_index, tmp_path, monkeypatch) -> None:
    figures = []
    monkeypatch.setattr(embedding_map, "map_figure", lambda *a, **k: figures.append(a) or {})
    monkeypatch.setattr(embedding_map, "write_map_html", lambda figure, out: out)
    index_map(tiny_index.folder, tmp_path / "m.html", color_by="lead sulfide galena")
    _, points, colouring, _ = figures[0]
    model = load_model(tiny_index.ckpt)
    expected = query_scores(
        model, EmbeddingIndex(tiny_index.folder).embeddings, "lead sulfide galena"
    )
    assert colouring.continuous and "lead sulfide galena" in colouring.title
    np.testing.assert_allclose(colouring.values, expected, rtol=1e-5)
    assert np.ptp(colouring.values) > 0


def test_query_marks_are_the_hits_of_clasp_search(tiny_index, tmp_path, capsys) -> None:
    queries = ["olivine Mg2SiO4", "layered perovskite"]
    out = index_map(tiny_index.folder, tmp_path / "m.html", queries=queries, top_k=5)
    figure = json.loads(
        re.search(
            r"Plotly\.newPlot\(\s*\"clasp-map\",\s*(\[.*?\]),\s*\{", out.read_text(), re.S
        ).group(1)
    )
    stars = [t for t in figure if t["marker"].get("symbol") == "star"]
    assert [t["name"] for t in stars] == [f"“{q}”: top 5" for q in queries]
    for query, trace in zip(queries, stars, strict=True):
        capsys.readouterr()
        argv = ["--index", str(tiny_index.folder), "--json", "--top-k", "5", "--device", "cpu"]
        assert clasp(["search", *argv, query]) == 0
        hits = json.loads(capsys.readouterr().out)["hits"]
        assert [row[0] for row in trace["customdata"]] == [h["id"] for h in hits]
        assert [float(row[6]) for row in trace["customdata"]] == pytest.approx(
            [h["score"] for h in hits], abs=1e-4
        )


def test_large_sets_are_placed_by_landmarks() -> None:
    """Past ``fit_limit`` points, t-SNE runs on landmarks and the others join their cluster."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 3
    labels = np.repeat(np.arange(4), 100)
    data = (centres[labels] + rng.normal(size=(400, 16)) * 0.3).astype(np.float32)
    xy = project_2d(data, ProjectionConfig(fit_limit=120))
    assert xy.shape == (400, 2) and np.isfinite(xy).all()
    means = np.stack([xy[labels == c].mean(0) for c in range(4)])
    nearest = np.linalg.norm(xy[:, None] - means[None], axis=2).argmin(1)
    assert (nearest == labels).mean() > 0.95


def test_clasp_map_command(tiny_index, tmp_path, capsys) -> None:
    out = tmp_path / "year.html"
    assert (
        clasp(["map", "--index", str(tiny_index.folder), "--out", str(out), "--color-by", "year"])
        == 0
    )
    assert out.is_file() and f"wrote {out}" in capsys.readouterr().out
    assert clasp(["map", "--index", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err


def test_points_of_records_match_the_index_points(tiny_index) -> None:
    """`clasp eval` maps records (no index): their points are those `clasp map` shows."""
    records = read_records(tiny_index.records)[:10]
    assert record_points(records) == index_points(tiny_index.folder)[:10]


def test_clasp_map_of_a_records_file_reuses_its_index(tiny_index, tmp_path, capsys) -> None:
    """`--ckpt` (the default dataset's path) embeds the records once, into the fixture's index."""
    out = tmp_path / "records.html"
    argv = ["--ckpt", str(tiny_index.ckpt), "--records", str(tiny_index.records)]
    cache = ["--cache-dir", str(tiny_index.folder.parents[1])]
    assert clasp(["map", *argv, *cache, "--out", str(out)]) == 0
    assert f"cached in {tiny_index.folder / 'map-cache'}" in capsys.readouterr().out
