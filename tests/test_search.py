"""`clasp embed` / `clasp search` on real COD CIFs, the Python API, chunked and hybrid search.

A tiny CLaSP (frozen tiny-random text tower) is trained on the ten COD sample CIFs and their
titles until every title ranks its own structure first; the tests then check the commands
against that known answer.
"""

from __future__ import annotations

import csv
import json
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from pymatgen.core import Composition, Element
from torch.utils.data import DataLoader

from clasp_pl.api import embed_structures, embed_texts, load_model, score, text_max_length
from clasp_pl.cli import main as clasp
from clasp_pl.data.batch import collate_pairs
from clasp_pl.data.cif import read_cif
from clasp_pl.data.graphs import structure_to_graph
from clasp_pl.data.ingest import IngestOptions, ingest_folder
from clasp_pl.data.records import CrystalRecord, read_records
from clasp_pl.data.rejects import Reject
from clasp_pl.evaluation.hybrid import ALPHA_GRID, choose_alpha
from clasp_pl.models.cgcnn import CGCNNConfig
from clasp_pl.models.clasp import CLaSPModule, HeadsConfig, OptimConfig
from clasp_pl.search import build
from clasp_pl.search.alpha_store import load_alpha, save_alpha
from clasp_pl.search.hybrid import hybrid_search, lexical_index
from clasp_pl.search.index import EmbeddingIndex, topk_search, write_index
from clasp_pl.search.lexical import LexicalIndex
from clasp_pl.search.meta import record_meta
from clasp_pl.text.config import TextConfig
from clasp_pl.text.sources import load_tokenizer
from helpers.data import COD_SAMPLE as COD
from helpers.data import SHARED_DATA, TINY_GRAPH, shared_path
from helpers.lightning import quiet_trainer

TRAIN_STEPS = 60


@pytest.fixture(scope="module")
def cod_records(tmp_path_factory):
    path = tmp_path_factory.mktemp("cod") / "cod.jsonl.gz"
    ingest_folder(shared_path(COD), path, options=IngestOptions(require_text=False), progress=False)
    return read_records(path)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, cod_records):
    """A tiny CLaSP trained on the ten (structure, title) pairs, one full batch per step."""
    L.seed_everything(0)
    model = CLaSPModule(
        text=TextConfig(model="tiny-random", freeze=True),
        crystal=CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=32),
        graph=TINY_GRAPH,
        heads=HeadsConfig(embed_dim=16),
        optim=OptimConfig(lr=1e-2, warmup_steps=5),
    )
    tokenizer = load_tokenizer("tiny-random")
    samples = [
        {
            **vars(structure_to_graph(record.to_structure(), TINY_GRAPH)),
            "input_ids": np.array(tokenizer(record.title)["input_ids"]),
            "group_id": np.array([i]),
            "record_index": np.array([i]),
            "item_id": np.array([i]),
        }
        for i, record in enumerate(cod_records)
    ]
    trainer = quiet_trainer(max_steps=TRAIN_STEPS)
    batches = [collate_pairs(samples)] * TRAIN_STEPS
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None))
    path = tmp_path_factory.mktemp("model") / "tiny.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, ckpt):
    """`clasp embed` over the ten COD CIFs plus one broken CIF."""
    cifs = tmp_path_factory.mktemp("cifs")
    for cif in COD.glob("*.cif"):
        shutil.copy(cif, cifs / cif.name)
    (cifs / "nested").mkdir()
    (cifs / "nested" / "broken.cif").write_text("data_broken\n_cell_length_a 5.0\nnot a cif\n")
    out = tmp_path_factory.mktemp("index") / "cod_index"
    argv = ["--ckpt", str(ckpt), "--input", str(cifs), "--out", str(out), "--no-progress"]
    assert clasp(["embed", *argv, "--device", "cpu"]) == 0
    return out


def search_json(capsys, index_dir, *args: str) -> dict:
    capsys.readouterr()
    assert clasp(["search", "--index", str(index_dir), "--json", "--device", "cpu", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_title_retrieves_its_own_structure_first(index_dir, cod_records, capsys):
    capsys.readouterr()
    record = cod_records[3]
    assert clasp(["search", "--index", str(index_dir), "--device", "cpu", record.title]) == 0
    table = capsys.readouterr().out
    assert "alpha 0.1: default" in table
    first_hit = table.splitlines()[3].split()
    assert first_hit[:1] + first_hit[2:4] == ["1", record.id, "BaTiO3"]

    queries = index_dir.parent / "titles.txt"
    queries.write_text("\n".join(r.title.replace("\n", " ") for r in cod_records) + "\n")
    out = index_dir.parent / "titles.jsonl"
    argv = ["--index", str(index_dir), "--queries", str(queries), "--out", str(out)]
    assert clasp(["search", *argv, "--device", "cpu"]) == 0
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["hits"][0]["id"] for r in results] == [r.id for r in cod_records]


def test_exact_formula_with_a_large_alpha_wins_whatever_the_model(index_dir):
    index = EmbeddingIndex(index_dir)
    model = load_model(index.info["checkpoint"])
    query = "Crystal chemistry of zinc blende versus TiO2"
    hits = hybrid_search(
        index, embed_texts(model, [query]), [query], 3, 5.0, lexical_index(index.meta)
    )
    top = index.meta[hits.indices[0, 0]]
    assert (top["id"], top["formula"], top["spacegroup"]) == ("7206075", "TiO2", "I4_1/amd")
    assert hits.lexical[0, 0] == 1.0


def test_batch_search_equals_single_queries(index_dir, cod_records, capsys):
    queries = [cod_records[0].title, "zinc sulfide wurtzite", str(COD / "9011050.cif")]
    path = index_dir.parent / "queries.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([["query"], *([q] for q in queries)])
    capsys.readouterr()
    argv = ["--index", str(index_dir), "--queries", str(path), "--top-k", "5", "--device", "cpu"]
    assert clasp(["search", *argv]) == 0
    batch = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    for query, result in zip(queries, batch, strict=True):
        single = search_json(capsys, index_dir, query, "--top-k", "5")
        assert [h["id"] for h in single["hits"]] == [h["id"] for h in result["hits"]]
        np.testing.assert_allclose(
            [h["score"] for h in single["hits"]], [h["score"] for h in result["hits"]], atol=1e-5
        )
    structure = batch[2]
    assert structure["kind"] == "structure" and structure["hits"][0]["id"] == "9011050"
    assert structure["hits"][0]["cosine"] > 0.99 and structure["hits"][0]["parts"] == ["learned"]


def test_alpha_zero_equals_the_learned_ranking(index_dir, capsys):
    query = "structure factors of sodium chloride and potassium chloride"
    index = EmbeddingIndex(index_dir)
    model = load_model(index.info["checkpoint"])
    emb = embed_texts(model, [query])
    lexical = lexical_index(index.meta)
    assert lexical.scores([query]).max() > 0  # the lexical part is not trivially zero
    hybrid = hybrid_search(index, emb, [query], 10, 0.0, lexical)
    scores, indices = index.search(emb, 10)
    assert torch.equal(hybrid.indices, indices) and torch.equal(hybrid.scores, scores)
    by_alpha = search_json(capsys, index_dir, query, "--alpha", "0")
    learned = search_json(capsys, index_dir, query, "--no-hybrid")
    assert by_alpha["hits"] == learned["hits"] and learned["alpha_source"].startswith("hybrid off")


def test_bad_cif_is_rejected_and_the_rest_indexed(index_dir, cod_records):
    rejects = [json.loads(line) for line in (index_dir / "rejects.jsonl").read_text().splitlines()]
    assert [(r["id"], r["reason"]) for r in rejects] == [("broken", "unparseable")]
    info = json.loads((index_dir / "index.json").read_text())
    assert info["count"] == 10 and info["dtype"] == "float16" and info["dim"] == 16
    assert info["model"]["graph"]["radius"] == TINY_GRAPH.radius
    index = EmbeddingIndex(index_dir)
    assert [m["id"] for m in index.meta] == [r.id for r in cod_records]
    assert index.meta[0]["formula"] == "NaCl" and index.meta[0]["spacegroup"] == "Fm-3m"
    assert np.allclose(np.linalg.norm(index.embeddings.astype(np.float32), axis=1), 1, atol=1e-3)


def test_chunked_search_equals_full_matrix_product(tmp_path):
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(7, 32, generator=generator), dim=1)
    index = torch.nn.functional.normalize(torch.randn(1000, 32, generator=generator), dim=1)
    extra = torch.rand(7, 1000, generator=generator)
    for k, chunk in [(10, 64), (10, 1000), (3, 7), (1500, 128)]:
        scores, indices = topk_search(queries, index.numpy(), k, chunk_size=chunk)
        full = (queries @ index.T).topk(min(k, 1000), dim=1)
        assert torch.equal(indices, full.indices)
        torch.testing.assert_close(scores, full.values)
        scores, indices = topk_search(
            queries, index, k, chunk_size=chunk, extra_scores=lambda rows: extra[:, rows]
        )
        assert torch.equal(indices, (queries @ index.T + extra).topk(min(k, 1000)).indices)

    meta = [{"id": str(i), "formula": "NaCl"} for i in range(1000)]
    write_index(tmp_path, index * 3.0, meta, {"checkpoint": "none"})  # renormalised, float16
    stored = EmbeddingIndex(tmp_path)
    scores, indices = stored.search(queries, 10)
    half = torch.from_numpy(np.array(stored.embeddings, dtype=np.float32))
    assert torch.equal(indices, (queries @ half.T).topk(10).indices)


def test_api_embeds_records_and_structures_alike_in_input_order(ckpt, cod_records, tmp_path):
    model = load_model(ckpt)
    assert text_max_length(model.hparams) == 256 and not model.training
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["datamodule_hyper_parameters"] = {"max_length": 32}
    torch.save(checkpoint, tmp_path / "with_data.ckpt")
    assert text_max_length(load_model(tmp_path / "with_data.ckpt").hparams) == 32
    assert embed_texts(model, []).shape == (0, 16)
    from_records = embed_structures(model, cod_records[:4], batch_size=3)
    structures = [r.to_structure() for r in cod_records[:4]]
    torch.testing.assert_close(embed_structures(model, structures), from_records)
    texts = [cod_records[0].title, "ZnO", cod_records[1].title + " and more words", "Si"]
    together = embed_texts(model, texts, batch_size=2)
    alone = torch.cat([embed_texts(model, [t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(score(together, from_records), together @ from_records.T)


def test_choose_alpha_prefers_lexical_when_the_embeddings_know_nothing():
    symbols = [e.symbol for e in Element if 3 <= e.Z <= 82]
    formulas = [f"{a}{b}2" for a, b in zip(symbols[::2], symbols[1::2], strict=True)]  # 40
    generator = torch.Generator().manual_seed(0)
    text_emb, crystal_emb = torch.nn.functional.normalize(
        torch.randn(2, len(formulas), 64, generator=generator), dim=2
    )
    lexical = LexicalIndex([Composition(f) for f in formulas])
    groups = torch.arange(len(formulas))
    best, recall = choose_alpha(text_emb, crystal_emb, formulas, lexical, groups, chunk_size=16)
    assert set(recall) == set(ALPHA_GRID) and recall[0.0] < 0.6
    assert best > 0 and recall[best] == 1.0 == max(recall.values())


def test_alpha_is_stored_per_checkpoint_file_and_version(tmp_path):
    """best-*.ckpt and last.ckpt of one folder keep their own alpha; a checkpoint overwritten
    since its alpha was chosen (last.ckpt every epoch) falls back to the default."""
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    best.write_bytes(b"best weights")
    last.write_bytes(b"last weights, epoch 1")
    assert load_alpha(best) == (0.1, "default (no best.ckpt.alpha.json next to the checkpoint)")
    save_alpha(best, 0.3, {0.0: 0.5, 0.3: 0.7})
    save_alpha(last, 0.05, {0.0: 0.5, 0.05: 0.6})
    stored = json.loads((tmp_path / "best.ckpt.alpha.json").read_text())
    assert stored["grid"] == {"0.0": 0.5, "0.3": 0.7} and len(stored["checkpoint_sha256"]) == 16
    assert load_alpha(best) == (0.3, f"stored with the model ({tmp_path / 'best.ckpt.alpha.json'})")
    assert load_alpha(last)[0] == 0.05
    last.write_bytes(b"last weights, epoch 2")
    assert load_alpha(last) == (
        0.1,
        "default (last.ckpt.alpha.json was chosen for another version of the file)",
    )


def test_embed_loads_the_model_before_the_ingest(tmp_path, monkeypatch, capsys):
    """A bad --ckpt fails at once, not after ingesting every input."""
    out = tmp_path / "index"
    argv = ["--input", str(shared_path(COD)), "--out", str(out), "--no-progress", "--device", "cpu"]
    assert clasp(["embed", "--ckpt", str(tmp_path / "missing.ckpt"), *argv]) == 2
    assert f"checkpoint {tmp_path / 'missing.ckpt'}: no such file" in capsys.readouterr().err

    def refuse(ckpt, device):
        raise ValueError(f"cannot load {ckpt}")

    monkeypatch.setattr(build, "load_model", refuse)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load"):
        clasp(["embed", "--ckpt", str(bad), *argv])
    assert not out.exists()


def test_embed_and_search_name_a_corrupt_checkpoint_and_stop(tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "index"
    argv = ["--ckpt", str(bad), "--input", str(shared_path(COD)), "--out", str(out)]
    assert clasp(["embed", *argv, "--no-progress", "--device", "cpu"]) == 2
    assert f"error: checkpoint {bad}: not a readable torch checkpoint" in capsys.readouterr().err
    assert not out.exists()
    write_index(tmp_path / "tiny", torch.eye(2), [{"id": "a"}, {"id": "b"}], {"checkpoint": "x"})
    argv = ["--index", str(tmp_path / "tiny"), "--ckpt", str(bad), "--device", "cpu", "NaCl"]
    assert clasp(["search", *argv]) == 2
    assert f"error: checkpoint {bad}: not a readable torch checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["one query", "--out", "results.jsonl"], "--out writes the results of --queries"),
        (["--queries", "queries.txt", "--json"], "--json is for a single query"),
    ],
)
def test_search_refuses_options_it_would_ignore(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        clasp(["search", "--index", str(tmp_path), *argv])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_meta_line_of_a_disordered_record_has_its_full_formula():
    """COD 4003024 read by the default reader (mixed policy): the index shows In, not CsSnCl3."""
    parsed = read_cif(shared_path(SHARED_DATA / "cif_edge_cases" / "gemmi__4003024.cif"))
    assert not isinstance(parsed, Reject), parsed
    record = CrystalRecord.from_sites(
        "4003024",
        parsed.sites.lattice,
        parsed.sites.frac,
        parsed.sites.species,
        parsed.sites.occupancies,
        title="CsSnCl3 doped with indium",
    )
    assert not record.is_ordered
    meta = record_meta(record, record.to_structure())
    assert (meta["id"], meta["formula"], meta["spacegroup"]) == (
        "4003024",
        "CsIn0.0672Sn0.9Cl3",
        "Pm-3m",
    )
    lexical = lexical_index([meta])
    torch.testing.assert_close(lexical.scores(["indium"])[0], torch.tensor([0.8 / 4]))
