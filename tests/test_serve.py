"""`clasp serve`: the JSON API answers what `clasp search --json` prints, and bad input gets a
clear 4xx JSON answer while the server goes on.

FastAPI's TestClient drives the app in-process over the shared tiny index (:mod:`helpers.viz`);
``tests/browser`` drives the page in headless Chromium.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from pymatgen.core import Structure

from clasp_pl.cli import main as clasp
from clasp_pl.serve import Limits, SearchEngine, create_app
from clasp_pl.serve.app import STATIC
from helpers.viz import N_RECORDS

LIMITS = Limits(max_upload_bytes=20_000, max_query_chars=200)


@pytest.fixture(scope="module")
def engine(tiny_index) -> SearchEngine:
    return SearchEngine(tiny_index.folder)


@pytest.fixture(scope="module")
def client(engine) -> TestClient:
    return TestClient(create_app(engine, LIMITS))


def clasp_search_json(capsys, folder, query: str, k: int) -> dict:
    capsys.readouterr()
    argv = ["--index", str(folder), "--json", "--top-k", str(k), "--device", "cpu", query]
    assert clasp(["search", *argv]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("query", ["galena PbS", "layered perovskite oxide"])
def test_api_search_is_clasp_search_json(client, tiny_index, capsys, query) -> None:
    response = client.get("/api/search", params={"q": query, "k": 7})
    assert response.status_code == 200
    assert response.json() == clasp_search_json(capsys, tiny_index.folder, query, 7)


def test_uploaded_cif_searches_by_structure(client, engine, tiny_index, tmp_path, capsys) -> None:
    target = engine.index.meta[5]["id"]
    cif = client.get("/api/cif", params={"id": target})
    assert cif.status_code == 200 and cif.headers["content-type"].startswith("chemical/x-cif")
    structure = Structure.from_str(cif.text, fmt="cif")
    assert structure.composition.reduced_formula == engine.index.meta[5]["formula"]
    response = client.post(
        "/api/search/cif", params={"k": 3, "name": "mine.cif"}, content=cif.content
    )
    result = response.json()
    assert response.status_code == 200 and result["kind"] == "structure"
    assert result["query"] == "mine.cif" and result["hits"][0]["id"] == target
    path = tmp_path / "mine.cif"
    path.write_bytes(cif.content)
    expected = clasp_search_json(capsys, tiny_index.folder, str(path), 3)
    assert result["hits"] == expected["hits"]


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"q": "   "}, 400, "empty query"),
        ({}, 400, "empty query"),
        ({"q": "olivine", "k": N_RECORDS + 1}, 400, f"ask for 1 to {N_RECORDS} hits"),
        ({"q": "olivine", "k": 0}, 400, f"ask for 1 to {N_RECORDS} hits"),
        ({"q": "olivine", "k": "ten"}, 400, "bad parameter: k"),
        ({"q": "x" * 201}, 413, "query of 201 characters; the limit is 200"),
    ],
)
def test_bad_text_queries_are_answered(client, params, status, message) -> None:
    response = client.get("/api/search", params=params)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert client.get("/api/search", params={"q": "olivine", "k": 3}).status_code == 200


def test_bad_uploads_are_answered(client) -> None:
    upload = "/api/search/cif"
    broken = client.post(
        upload, params={"name": "broken.cif"}, content=b"data_x\n_cell_length_a 5\nnonsense\n"
    )
    assert broken.status_code == 422
    error = broken.json()["error"]
    assert error.startswith("broken.cif: cannot read query CIF") and "/tmp" not in error
    empty = client.post(upload, params={"name": "empty.cif"}, content=b"  \n")
    assert (empty.status_code, empty.json()["error"]) == (
        400,
        "empty.cif: empty file; upload a CIF file",
    )
    big = client.post(upload, content=b"#" * 20_001)  # declares its length: refused before reading
    assert big.status_code == 413 and "the limit is 20,000 bytes" in big.json()["error"]
    streamed = client.post(upload, content=iter([b"#" * 15_000, b"#" * 15_000]))  # no length
    assert streamed.status_code == 413 and "the limit is 20,000 bytes" in streamed.json()["error"]
    over_k = client.post(upload, params={"k": 10_000}, content=b"data_x\n")
    assert over_k.status_code == 400


def test_structures_and_page_are_served(client, engine) -> None:
    assert client.get("/api/cif", params={"id": "no-such-id"}).status_code == 404
    info = client.get("/api/info").json()
    assert info["count"] == N_RECORDS and info["structures"] is True
    page = client.get("/")
    assert page.status_code == 200 and "/static/vendor/3dmol/3Dmol-min.js" in page.text
    script = client.get("/static/vendor/3dmol/3Dmol-min.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    assert "BSD" in (STATIC / "vendor" / "3dmol" / "LICENSE").read_text()
    assert client.get("/api/nothing").json() == {"error": "Not Found"}


def test_clasp_serve_refuses_a_missing_index(tmp_path, capsys) -> None:
    assert clasp(["serve", "--index", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or folder" in capsys.readouterr().err
