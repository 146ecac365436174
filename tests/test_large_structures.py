"""``--max-atoms 1000`` end to end on real CIFs with more than 200 sites.

The set: a real 616-site CIF (the Ru complex P24Ru4H252C296S24N16 of pymatgen's reader tests,
P-1) and P1 supercells of real COD CIFs written by pymatgen's CifWriter (TiO2 3×3×3 = 324
and 4×4×3 = 576 sites, diamond Ge 4×4×4 = 512 and 3×3×3 = 216, rock salt NaCl 5×5×5 = 1000, the
cap itself). Each goes through ``clasp data ingest --max-atoms 1000``, the crystal-graph cache,
training batches of a tiny model under ``clasp fit``, and ``clasp embed --max-atoms 1000``.
With the default cap of 200 the supercells fall back to their primitive cells and the 616-site
molecule crystal (primitive already) is rejected as ``too_many_atoms``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pymatgen.io.cif import CifWriter

from clasp_pl.cli import main as clasp
from clasp_pl.data.cif import read_cif
from clasp_pl.data.featurize import build_graph_store
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.records import read_records
from helpers.data import COD_SAMPLE, REPO, SHARED_DATA, shared_path

pytestmark = pytest.mark.slow

LARGE_CAP = 1000
REAL_LARGE = SHARED_DATA / "cif_edge_cases" / "pymatgen__P24Ru4H252C296S24N16.cif"
SUPERCELLS = {  # (COD CIF, supercell) -> sites of the supercell
    ("7206075", (3, 3, 3)): 324,  # TiO2, 12 sites (6 in the primitive cell)
    ("7206075", (4, 4, 3)): 576,
    ("9011050", (4, 4, 4)): 512,  # diamond Ge, 8 sites
    ("9011050", (3, 3, 3)): 216,
    ("1000041", (5, 5, 5)): 1000,  # rock salt NaCl, 8 sites
}
PRIMITIVE_SITES = {"7206075": 6, "9011050": 2, "1000041": 2}
REAL_LARGE_SITES = 616


def supercell_name(cod_id: str, multiple: tuple[int, int, int]) -> str:
    return f"{cod_id}_x{''.join(map(str, multiple))}"


@pytest.fixture(scope="module")
def large_cifs(tmp_path_factory) -> Path:
    """A folder of the real 616-site CIF and P1 supercells of real COD CIFs, and a metadata
    file with a distinct title for each (ingestion keeps structures with text)."""
    folder = tmp_path_factory.mktemp("large_cifs")
    shutil.copy(shared_path(REAL_LARGE), folder / REAL_LARGE.name)
    for (cod_id, multiple), sites in SUPERCELLS.items():
        structure = read_cif(shared_path(COD_SAMPLE / f"{cod_id}.cif")).structure
        structure.make_supercell(multiple)
        assert len(structure) == sites
        (folder / f"{supercell_name(cod_id, multiple)}.cif").write_text(str(CifWriter(structure)))
    titles = [
        {"id": path.stem, "title": f"Structure of {path.stem}, a large cell"}
        for path in sorted(folder.glob("*.cif"))
    ]
    (folder.parent / "meta.jsonl").write_text("".join(json.dumps(t) + "\n" for t in titles))
    return folder


def ingest(cifs: Path, out: Path, *cap: str) -> dict[str, int]:
    """Run ``clasp data ingest``; returns each kept record's number of sites by id."""
    argv = ["data", "ingest", "--cifs", str(cifs), "--metadata", str(cifs.parent / "meta.jsonl")]
    assert clasp([*argv, "--out", str(out), "--no-progress", *cap]) == 0
    return {record.id: record.num_sites for record in read_records(out)}


@pytest.fixture(scope="module")
def large_records(large_cifs) -> Path:
    out = large_cifs.parent / "large.jsonl.gz"
    ingest(large_cifs, out, "--max-atoms", str(LARGE_CAP))
    return out


def test_ingest_keeps_large_cells_at_max_atoms_1000(large_cifs, large_records):
    expected = {supercell_name(c, m): sites for (c, m), sites in SUPERCELLS.items()}
    expected[REAL_LARGE.stem] = REAL_LARGE_SITES
    assert {r.id: r.num_sites for r in read_records(large_records)} == expected


def test_default_cap_reduces_supercells_and_rejects_the_large_primitive_cell(large_cifs):
    out = large_cifs.parent / "default_cap.jsonl.gz"
    kept = ingest(large_cifs, out)
    expected = {supercell_name(c, m): PRIMITIVE_SITES[c] for c, m in SUPERCELLS}
    assert kept == expected
    rejects = [json.loads(line) for line in out.with_name("default_cap.rejects.jsonl").open()]
    assert [(r["id"], r["reason"]) for r in rejects] == [(REAL_LARGE.stem, "too_many_atoms")]


def test_graphs_of_large_cells(large_records, tmp_path):
    """One graph per record with every site a node and at least ``max_neighbors`` edges per
    node (more where the last neighbour shell is tied), all inside the cutoff."""
    config = GraphConfig()  # the default model's 8 Å, 12 neighbours
    store, rejects = build_graph_store(large_records, tmp_path / "graphs", config)
    assert rejects == []
    sites = [record.num_sites for record in read_records(large_records)]
    assert len(store) == len(sites)
    for index, n_sites in enumerate(sites):
        graph = store[index]
        assert len(graph["species_per_site"]) == n_sites
        assert np.bincount(graph["edge_src"], minlength=n_sites).min() >= config.max_neighbors
        assert 0 < graph["edge_dist"].min() and graph["edge_dist"].max() <= config.radius
        assert graph["edge_dst"].max() < n_sites


@pytest.fixture(scope="module")
def trained_ckpt(large_records, tmp_path_factory) -> Path:
    """A few training steps of the tiny model on the large records under ``clasp fit`` (three
    epochs of the debug trainer: the train split holds a batch or two of these records)."""
    run = tmp_path_factory.mktemp("fit")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(run)
        clasp(
            [
                "fit",
                *("--config", str(REPO / "conf/trainer/cpu.yaml")),
                *("--config", str(REPO / "conf/trainer/debug.yaml")),
                *("--config", str(REPO / "conf/data/amcsd.yaml")),
                *("--config", str(REPO / "conf/model/clasp.yaml")),
                *("--config", str(REPO / "conf/model/tiny.yaml")),
                *("--data.records", str(large_records)),
                *("--data.cache_dir", str(run / "cache")),
                *("--data.split_fractions", "[0.67, 0.17, 0.16]"),
                *("--data.batch_size", "2"),
                *("--data.prepare_workers", "1"),
                *("--trainer.max_epochs", "3"),
                *("--trainer.enable_progress_bar", "false"),
            ]
        )
    return run / "runs/debug/checkpoints/last.ckpt"


def test_fit_trains_on_large_cells(trained_ckpt):
    records = sorted(trained_ckpt.parents[1].joinpath("records").rglob("*.jsonl"))
    steps = [json.loads(line) for path in records for line in path.open()]
    losses = [step["loss"] for step in steps]
    trained = {item for step in steps for item in step["item_ids"]}
    assert trained_ckpt.exists()
    assert len(losses) >= 3 and all(np.isfinite(losses))
    assert len(trained) >= 2  # each step a batch of two structures of 216 to 1000 sites


def test_embed_indexes_large_cells(large_cifs, trained_ckpt, tmp_path):
    out = tmp_path / "index"
    argv = ["embed", "--ckpt", str(trained_ckpt), "--input", str(large_cifs), "--out", str(out)]
    assert clasp([*argv, "--max-atoms", str(LARGE_CAP), "--no-progress", "--device", "cpu"]) == 0
    ids = [json.loads(line)["id"] for line in (out / "meta.jsonl").open()]
    embeddings = np.load(out / "embeddings.npy")
    assert sorted(ids) == sorted(p.stem for p in large_cifs.glob("*.cif"))
    assert embeddings.shape == (len(ids), 16)
    assert np.isfinite(embeddings.astype(np.float32)).all()
