"""Data modules and their feature caches: cache folders, cache keys, rejects, keywords, pairs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from clasp_pl.data import datamodule as datamodule_module
from clasp_pl.data import featurize
from clasp_pl.data.batch import PairBatch, collate_graphs, collate_pairs
from clasp_pl.data.composition import composition_features
from clasp_pl.data.datamodule import CrystalTextDataModule, records_cache_root
from clasp_pl.data.featurize import (
    build_composition_store,
    build_graph_store,
    build_token_store,
    composition_shard,
    log_rejects,
)
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.property_datamodule import PropertyDataModule
from clasp_pl.data.records import CrystalRecord, write_records
from clasp_pl.data.rejects import Reject
from clasp_pl.text.config import TextConfig
from clasp_pl.text.tokens import pad_token_ids
from helpers.data import TINY_GRAPH, first_records


@pytest.fixture(scope="module")
def few_records(tmp_path_factory) -> Path:
    """Twelve real structures with their titles."""
    path = tmp_path_factory.mktemp("few") / "few.jsonl.gz"
    write_records(first_records(12), path)
    return path


def _manifest_key(store_root: Path) -> dict:
    return json.loads((store_root / "manifest.json").read_text())["key"]


# ------------------------------------------------------------------------------ cache folders
def test_records_files_of_one_name_get_their_own_cache(tmp_path: Path) -> None:
    paths = [tmp_path / "a" / "cod.jsonl.gz", tmp_path / "b" / "cod.jsonl.gz"]
    paths.append(tmp_path / "a" / "cod.v2.jsonl.gz")
    roots = [records_cache_root(tmp_path / "cache", path) for path in paths]
    assert len(set(roots)) == 3
    assert [root.name.rsplit("-", 1)[0] for root in roots] == ["cod", "cod", "cod.v2"]
    assert all(root.parent == tmp_path / "cache" for root in roots)
    # the same file named relatively or absolutely has one cache
    relative = Path("data") / "x.jsonl.gz"
    assert records_cache_root("c", relative) == records_cache_root("c", relative.resolve())


def test_data_modules_use_the_per_file_cache_folder(tmp_path: Path, few_records: Path) -> None:
    other = tmp_path / "elsewhere" / few_records.name
    other.parent.mkdir()
    other.write_bytes(few_records.read_bytes())
    cache = tmp_path / "cache"
    text = CrystalTextDataModule(records=str(few_records), cache_dir=str(cache))
    text_other = CrystalTextDataModule(records=str(other), cache_dir=str(cache))
    prop = PropertyDataModule(records=str(few_records), cache_dir=str(cache))
    assert text.cache_root == prop.cache_root == records_cache_root(cache, few_records)
    assert text.cache_root != text_other.cache_root


# ---------------------------------------------------------------------------------- cache keys
def test_graph_store_ignores_the_gaussian_basis(
    tmp_path: Path, few_records: Path, monkeypatch
) -> None:
    build_graph_store(few_records, tmp_path / "graphs", TINY_GRAPH)

    def must_not_run(*args):
        raise AssertionError("graphs recomputed")

    monkeypatch.setattr(featurize, "graph_shard", must_not_run)
    wider = GraphConfig(TINY_GRAPH.radius, TINY_GRAPH.max_neighbors, 0.5, 0.7)
    store, _ = build_graph_store(few_records, tmp_path / "graphs", wider)
    assert len(store) == 12


def test_graph_format_version_is_part_of_the_graph_key(
    tmp_path: Path, few_records: Path, monkeypatch
) -> None:
    build_graph_store(few_records, tmp_path / "graphs", TINY_GRAPH)
    monkeypatch.setattr(featurize, "GRAPH_FORMAT_VERSION", 999)
    build_graph_store(few_records, tmp_path / "graphs", TINY_GRAPH)
    assert _manifest_key(tmp_path / "graphs")["version"] == 999


def test_graph_store_keeps_the_species_and_occupancies_of_a_mixed_site(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl.gz"
    write_records([_record("nacl", ["Na", "Cl"]), cs_sn_in_cl3()], path)
    store, rejects = build_graph_store(path, tmp_path / "graphs", TINY_GRAPH)
    assert not rejects and len(store) == 2
    ordered, mixed = store[0], store[1]
    assert ordered["site_species_z"].tolist() == [11, 17]
    assert ordered["species_per_site"].tolist() == [1, 1]
    assert mixed["site_species_z"].tolist() == [55, 50, 49, 17, 17, 17]
    assert mixed["species_per_site"].tolist() == [1, 2, 1, 1, 1]
    np.testing.assert_allclose(mixed["site_occupancy"], [1, 0.9, 0.07, 1, 1, 1], rtol=1e-6)
    batch = collate_graphs([ordered, mixed])
    assert batch["species_site"].tolist() == [0, 1, 2, 3, 3, 4, 5, 6]
    assert batch["crystal_index"].tolist() == [0, 0, 1, 1, 1, 1, 1]


def test_caption_format_version_is_part_of_the_token_key(
    tmp_path: Path, few_records: Path, monkeypatch
) -> None:
    build_token_store(few_records, tmp_path / "tokens", "tiny-random", ["title"], 16)
    monkeypatch.setattr(featurize, "CAPTION_FORMAT_VERSION", 999)
    build_token_store(few_records, tmp_path / "tokens", "tiny-random", ["title"], 16)
    assert _manifest_key(tmp_path / "tokens")["caption_format"] == 999


def test_composition_format_version_is_part_of_its_key(
    tmp_path: Path, few_records: Path, monkeypatch
) -> None:
    build_composition_store(few_records, tmp_path / "composition")
    monkeypatch.setattr(featurize, "COMPOSITION_FORMAT_VERSION", 999)
    build_composition_store(few_records, tmp_path / "composition")
    assert _manifest_key(tmp_path / "composition")["version"] == 999


# ---------------------------------------------------------------------------- composition
def _record(record_id: str, species: list[str]) -> CrystalRecord:
    coords = [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]][: len(species)]
    lattice = [[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0]]
    return CrystalRecord(record_id, lattice, species, coords, title="t", source=f"src-{record_id}")


def test_element_beyond_z100_has_no_composition_descriptor() -> None:
    with pytest.raises(ValueError, match="Z=104"):
        composition_features(_record("rf", ["Rf", "O"]).to_structure())


def cs_sn_in_cl3() -> CrystalRecord:
    """A Cs(Sn0.9In0.07)Cl3 perovskite cell (COD 4003024's sites, a = 5.6 Å): one mixed site
    with a 3 % vacancy."""
    return CrystalRecord(
        "cs-sn-in-cl3",
        [[5.6, 0, 0], [0, 5.6, 0], [0, 0, 5.6]],
        ["Cs", "Sn", "Cl", "Cl", "Cl"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        occupancies=[{"Cs": 1.0}, {"Sn": 0.9, "In": 0.07}, {"Cl": 1.0}, {"Cl": 1.0}, {"Cl": 1.0}],
        title="t",
    )


def test_composition_descriptor_of_a_disordered_structure_uses_every_occupancy() -> None:
    features = composition_features(cs_sn_in_cl3().to_structure())
    atoms = 1 + 0.9 + 0.07 + 3  # occupancy-weighted atoms per cell
    fractions = np.zeros(100)
    fractions[[55 - 1, 50 - 1, 49 - 1, 17 - 1]] = [1 / atoms, 0.9 / atoms, 0.07 / atoms, 3 / atoms]
    np.testing.assert_allclose(features[:100], fractions, rtol=1e-6)
    assert features[100:330].argmax() + 1 == 221 and features[100:330].sum() == 1  # Pm-3m
    np.testing.assert_allclose(features[330], np.log(5), rtol=1e-6)  # sites
    np.testing.assert_allclose(features[331], 5.6**3 / atoms / 20, rtol=1e-6)
    grams = (132.905 + 0.9 * 118.71 + 0.07 * 114.818 + 3 * 35.45) / 6.02214076e23
    np.testing.assert_allclose(features[332], grams / (5.6e-8) ** 3 / 5, rtol=1e-4)


def test_composition_descriptor_of_an_ordered_structure_counts_sites() -> None:
    features = composition_features(_record("nacl", ["Na", "Cl"]).to_structure())
    np.testing.assert_allclose(features[[11 - 1, 17 - 1]], [0.5, 0.5], rtol=1e-7)
    assert features[:100].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(features[331], 4.0**3 / 2 / 20, rtol=1e-6)


def test_failing_record_is_a_composition_reject_that_keeps_its_place() -> None:
    lines = [_record("ok", ["Na", "Cl"]).to_json(), _record("rf", ["Rf", "O"]).to_json()]
    result = composition_shard(0.1, list(enumerate(lines)))
    items = result.items
    assert len(items) == 2 and len(result.rejects) == 1
    assert items[0]["features"].shape == (1, 333) and np.isfinite(items[0]["features"]).all()
    reject = result.rejects[0]
    assert (reject.id, reject.source, reject.reason) == (
        "rf",
        "src-rf",
        "featurization_failed",
    )
    assert items[1]["features"].shape == (1, 333) and np.isnan(items[1]["features"]).all()


def test_composition_store_keeps_one_row_per_record(tmp_path: Path) -> None:
    path = tmp_path / "z.jsonl.gz"
    write_records([_record("a", ["Na", "Cl"]), _record("rf", ["Rf"]), _record("b", ["K"])], path)
    store, rejects = build_composition_store(path, tmp_path / "composition")
    assert len(store) == 3 and [r.id for r in rejects] == ["rf"]
    assert np.isnan(store[1]["features"]).all() and store[2]["features"][0, 18] == 1.0  # K


def test_structures_without_composition_features_are_left_out_of_pairs(
    few_records: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    """A record whose descriptor failed keeps a NaN row in its store; its structure (whose graph
    is fine) must not reach a batch of the composition-only baseline."""
    failing = first_records(12)[3].id

    def fails_for_one(symprec: float, index: int, record: CrystalRecord) -> dict:
        if record.id == failing:
            raise ValueError("descriptor failed")
        return featurize.feature_row_item(composition_features(record.to_structure(), symprec))

    monkeypatch.setattr(featurize, "_composition_item", fails_for_one)
    dm = CrystalTextDataModule(
        records=str(few_records),
        cache_dir=str(tmp_path / "cache"),
        text=TextConfig(model="tiny-random"),
        composition_features=True,
        graph=TINY_GRAPH,
        split_fractions=(1.0, 0.0, 0.0),
    )
    caplog.set_level(logging.INFO)
    dm.prepare_data()
    dm.setup("fit")
    assert "1 structures have no composition features" in caplog.text
    train = dm.datasets["train"]
    served = [train[i] for i in range(len(train))]
    assert len(served) == 11
    assert all(np.isfinite(sample["composition_features"]).all() for sample in served)


def test_a_complete_cache_opens_without_reading_the_records(
    few_records: Path, tmp_path: Path, monkeypatch
) -> None:
    """Every rank of a DDP run opens the caches: once they are complete, none of them may hold
    the records' lines (1.9 GiB at 400k) in memory, only hash the file."""
    options = {
        "records": str(few_records),
        "cache_dir": str(tmp_path / "cache"),
        "text": TextConfig(model="tiny-random"),
        "composition_features": True,
        "graph": TINY_GRAPH,
    }
    first = CrystalTextDataModule(**options)
    first.prepare_data()
    first.setup("fit")

    def no_reading(path):
        raise AssertionError(f"the records were read again: {path}")

    monkeypatch.setattr(datamodule_module, "iter_record_lines", no_reading)
    again = CrystalTextDataModule(**options)
    again.prepare_data()
    again.setup("fit")
    assert len(again.datasets["train"]) == len(first.datasets["train"]) > 0
    with pytest.raises(AssertionError, match="read again"):
        again.read_lines()


def test_graph_free_batches_hold_the_same_pairs_without_graphs(
    few_records: Path, tmp_path: Path
) -> None:
    """``crystal_graphs=False`` (the composition baseline) serves the same pairs, tokens and
    descriptors as the graph-carrying module, with no graph field in the batch."""
    batches = {}
    for with_graphs in (True, False):
        dm = CrystalTextDataModule(
            records=str(few_records),
            cache_dir=str(tmp_path / "cache"),
            text=TextConfig(model="tiny-random"),
            composition_features=True,
            crystal_graphs=with_graphs,
            graph=TINY_GRAPH,
            split_fractions=(1.0, 0.0, 0.0),
            batch_size=5,
        )
        dm.prepare_data()
        dm.setup("fit")
        batches[with_graphs] = next(iter(dm.train_dataloader()))
    full, bare = batches[True], batches[False]
    assert "edge_src" in full and "edge_src" not in bare and "site_species_z" not in bare
    assert bare["num_crystals"] == full["num_crystals"] == 5
    for key in ("input_ids", "group_ids", "record_index", "item_id", "composition_features"):
        assert torch.equal(bare[key], full[key]), key


# ------------------------------------------------------------------------------- rejects
def test_rejects_are_logged_with_their_reason(caplog) -> None:
    caplog.set_level(logging.INFO)
    reject = Reject(id="x", source="f.cif", reason="featurization_failed", message="boom")
    log_rejects([reject], "crystal graphs")
    assert caplog.messages == ["crystal graphs: skipped x (f.cif): featurization_failed: boom"]


def test_a_failing_record_is_logged_by_the_build(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "z.jsonl.gz"
    write_records([_record("a", ["Na", "Cl"]), _record("rf", ["Rf"])], path)
    build_graph_store(path, tmp_path / "graphs", TINY_GRAPH)
    assert [m for m in caplog.messages if "skipped" in m] == [
        "crystal graphs: skipped rf (src-rf): featurization_failed: "
        "element with Z=104 has no CGCNN atom features (Z <= 100)"
    ]


def test_property_data_module_accepts_a_graph_dict(few_records: Path, tmp_path: Path) -> None:
    graph = {"radius": 5.0, "max_neighbors": 8}
    dm = PropertyDataModule(records=str(few_records), cache_dir=str(tmp_path), graph=graph)
    assert dm.graph == GraphConfig(radius=5.0, max_neighbors=8)


# ------------------------------------------------------------------------------ keywords
def test_keywords_file_reports_its_matches(few_records: Path, tmp_path: Path, caplog) -> None:
    ids = [record.id for record in first_records(2)]
    keywords = tmp_path / "kw.json"
    keywords.write_text(json.dumps({ids[0]: ["garnet"], ids[1]: ["spinel"], "other": ["x"]}))
    dm = CrystalTextDataModule(records=str(few_records), keywords=str(keywords))
    caplog.set_level(logging.INFO)
    lines, _, _ = dm.record_lines()
    assert json.loads(lines[0])["keywords"] == ["garnet"]
    assert "matched 2 of 12 records" in caplog.text


def test_setup_after_prepare_data_reads_the_records_once(
    few_records: Path, tmp_path: Path, caplog
) -> None:
    """``setup`` takes over the stores that ``prepare_data`` built in this process (the keyword
    summary, logged by each reading of the records, appears once); a later ``setup`` opens the
    complete caches without reading the records at all."""
    ids = [record.id for record in first_records(2)]
    keywords = tmp_path / "kw.json"
    keywords.write_text(json.dumps({ids[0]: ["garnet"]}))
    dm = CrystalTextDataModule(
        records=str(few_records),
        cache_dir=str(tmp_path / "cache"),
        keywords=str(keywords),
        text=TextConfig(model="tiny-random"),
        graph=TINY_GRAPH,
        split_fractions=(0.5, 0.25, 0.25),
    )
    caplog.set_level(logging.INFO)
    dm.prepare_data()
    dm.setup("fit")
    assert caplog.text.count("matched 1 of 12 records") == 1
    caplog.clear()
    dm.datasets = {}
    dm.setup("fit")
    assert "matched 1 of 12 records" not in caplog.text
    assert len(dm.datasets["train"]) > 0


def test_keywords_file_matching_nothing_warns(few_records: Path, tmp_path: Path) -> None:
    keywords = tmp_path / "kw.json"
    keywords.write_text(json.dumps({"not-an-id": ["garnet"]}))
    dm = CrystalTextDataModule(records=str(few_records), keywords=str(keywords))
    with pytest.warns(UserWarning, match="matches none of the 12 records"):
        dm.record_lines()


# -------------------------------------------------------------------------------- pairs
def _plain_word_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer without special tokens: an empty caption has 0 tokens."""
    vocab = {"[UNK]": 0, "[PAD]": 1, "garnet": 2}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]")
    fast.save_pretrained(folder)
    return folder


def test_pairs_need_more_tokens_than_an_empty_caption(tmp_path: Path) -> None:
    records = first_records(12)
    for number, record in enumerate(records):
        record.title = "garnet" if number % 2 else ""  # one token, or none at all
    write_records(records, tmp_path / "short.jsonl.gz")
    dm = CrystalTextDataModule(
        records=str(tmp_path / "short.jsonl.gz"),
        cache_dir=str(tmp_path / "cache"),
        text=TextConfig(model=str(_plain_word_tokenizer(tmp_path / "tokenizer"))),
        caption_fields=["title"],
        graph=TINY_GRAPH,
        split_fractions=(0.5, 0.25, 0.25),
    )
    dm.prepare_data()
    dm.setup("fit")
    kept = np.concatenate([d.item_ids for d in dm.datasets.values()])
    record_index = dm.datasets["train"].graphs.field("record_index")[kept]
    assert sorted(record_index.tolist()) == list(range(1, 12, 2))


def test_pad_token_ids() -> None:
    ids, mask = pad_token_ids([np.array([5, 6, 7], np.int32), np.array([8], np.int32)], 0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and ids.dtype == np.int64
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_collated_pairs_follow_the_pair_batch_contract(few_records: Path, tmp_path: Path) -> None:
    """Every key collate makes is one that :class:`PairBatch` documents, with its dtype and
    shape; every cached feature present makes every optional key appear."""
    dm = CrystalTextDataModule(
        records=str(few_records),
        cache_dir=str(tmp_path / "cache"),
        text=TextConfig(model="tiny-random", freeze=True),
        composition_features=True,
        chgnet_features=True,
        graph=TINY_GRAPH,
        split_fractions=(1.0, 0.0, 0.0),
    )
    dm.prepare_data()
    dm.setup("fit")
    train = dm.datasets["train"]
    batch = collate_pairs([train[i] for i in range(5)], dm.pad_token_id)
    # text_hidden (a partly trainable tower's cached states) excludes text_features: see
    # tests/test_text_partial.py
    optional = PairBatch.__optional_keys__ - {"text_hidden"}
    assert set(batch) == PairBatch.__required_keys__ | optional
    n_sites, n_edges = len(batch["crystal_index"]), len(batch["edge_src"])
    n_species = len(batch["site_species_z"])
    assert batch["num_crystals"] == 5
    assert n_species >= n_sites and int(batch["species_site"].max()) == n_sites - 1
    for name, shape, dtype in [
        ("site_species_z", (n_species,), torch.int64),
        ("site_occupancy", (n_species,), torch.float32),
        ("species_site", (n_species,), torch.int64),
        ("edge_dst", (n_edges,), torch.int64),
        ("edge_dist", (n_edges,), torch.float32),
        ("crystal_index", (n_sites,), torch.int64),
        ("group_ids", (5,), torch.int64),
        ("record_index", (5,), torch.int64),
        ("item_id", (5,), torch.int64),
        ("text_features", (5, 32), torch.float32),  # tiny-random's width
        ("composition_features", (5, 333), torch.float32),
        ("chgnet_features", (5, 64), torch.float32),
    ]:
        assert (tuple(batch[name].shape), batch[name].dtype) == (shape, dtype), name
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[0] == 5 and batch["input_ids"].dtype == torch.int64
