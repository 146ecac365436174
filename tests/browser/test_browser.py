"""The map and the search page in a real browser (headless Chromium driven by Selenium).

Skipped, with the command that installs it, where Chromium or chromedriver is absent (``.ci/run``
installs both). ``CLASP_SCREENSHOT_DIR=docs`` also saves the screenshots the tests judge.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from browser_pages import (
    INSTALL_HINT,
    chrome,
    chromium_paths,
    open_map,
    search_page,
    served,
    status_after_query,
)

from clasp_pl.serve import SearchEngine, create_app
from clasp_pl.viz import index_map, index_points
from helpers.viz import N_RECORDS

pytestmark = pytest.mark.skipif(chromium_paths() is None, reason=INSTALL_HINT)
SHOTS = Path(os.environ["CLASP_SCREENSHOT_DIR"]) if os.environ.get("CLASP_SCREENSHOT_DIR") else None


def shot_path(name: str) -> Path | None:
    return SHOTS / name if SHOTS else None


@pytest.fixture(scope="module")
def driver():
    pytest.importorskip("selenium", reason=INSTALL_HINT)
    session = chrome()
    yield session
    session.quit()


@pytest.fixture(scope="module")
def server(tiny_index):
    with served(create_app(SearchEngine(tiny_index.folder))) as url:
        yield url


def test_map_has_its_points_and_hover_text(driver, tiny_index, tmp_path) -> None:
    html = index_map(tiny_index.folder, tmp_path / "map.html", queries=["galena"], top_k=3)
    view = open_map(driver, html)
    points = {p.id: p for p in index_points(tiny_index.folder)}
    structure_traces = [count for name, count in view.traces if not name.startswith("“")]
    assert sum(structure_traces) == N_RECORDS
    assert ("“galena”: top 3", 3) in view.traces
    hovered = points[view.hovered[0]]
    for field in (hovered.id, hovered.formula, hovered.spacegroup):
        assert field in view.hover_label
    assert view.shot.std > 10 and view.shot.inked > 0.002, "the map looks blank"
    view.shot.save(shot_path("map.png"))


def test_typed_query_shows_hits_and_the_structure_in_3d(driver, server) -> None:
    query = "lead sulfide galena"
    view = search_page(driver, server, query)
    url = f"{server}/api/search?" + urllib.parse.urlencode({"q": query, "k": 10})
    with urllib.request.urlopen(url) as response:
        expected = json.load(response)["hits"]
    assert [row[:3] for row in view.rows] == [
        [str(h["rank"]), h["formula"], h["spacegroup"]] for h in expected
    ]
    assert view.shown == expected[0]["id"] and view.canvases >= 1
    assert view.viewer.std > 5 and view.viewer.inked > 0.001, "the 3-D view looks blank"
    assert view.page.std > 10
    view.page.save(shot_path("search.png"))


def test_uploaded_cif_and_bad_input_in_the_page(driver, server, tmp_path) -> None:
    with urllib.request.urlopen(f"{server}/api/cif?id=amcsd-3") as response:
        (tmp_path / "galena.cif").write_bytes(response.read())
    view = search_page(driver, server, cif=tmp_path / "galena.cif")
    assert view.rows[0][1:3] == ["PbS", "Fm-3m"] and view.shown == "amcsd-3"
    assert "empty query" in status_after_query(driver, server, "   ")
