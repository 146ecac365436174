"""Structure captions: their text for real records, their stores, and their mixing into training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Composition

from clasp_pl.data import captions
from clasp_pl.data.caption_mixing import (
    CAPTION_GROUP_ID,
    CaptionMixingLoader,
    caption_draws,
    mix_captions,
)
from clasp_pl.data.captions import (
    NO_CAPTION,
    build_structure_caption_stores,
    caption_group_id,
    readable_formula,
    structure_caption,
    structure_facts,
)
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.featurize import RecordSource
from clasp_pl.data.loading import ResumableDataLoader
from clasp_pl.data.records import CrystalRecord, iter_record_lines
from clasp_pl.text.config import TextConfig
from helpers.data import DEFAULT_RECORDS, TINY_GRAPH


def default_records(*ids: str) -> dict[str, CrystalRecord]:
    """The default-data records of these ids (a record line starts with its id)."""
    starts = tuple(f'{{"id":"{record_id}",' for record_id in ids)
    lines = (line for line in iter_record_lines(DEFAULT_RECORDS) if line.startswith(starts))
    found = {record.id: record for record in map(CrystalRecord.from_json, lines)}
    assert set(found) == set(ids)
    return found


@pytest.fixture(scope="module")
def named() -> dict[str, CrystalRecord]:
    return default_records("amcsd-19141", "amcsd-22", "amcsd-17", "amcsd-107", "amcsd-3")


# -------------------------------------------------------------------------- caption text
def test_vaterite_caption_names_its_disordered_carbonate(named) -> None:
    """Vaterite's carbonate sites are a third occupied: the full composition still reads CaCO3."""
    record = named["amcsd-19141"]
    assert record.occupancies  # disordered
    caption = structure_caption(record)
    for words in ("vaterite", "CaCO3", "hexagonal carbonate", "P6_3/mmc", "C-Ca-O"):
        assert words in caption


def test_solid_solution_keeps_its_fractions(named) -> None:
    facts = structure_facts(named["amcsd-22"])  # cronstedtite, Fe and Si on mixed sites
    assert facts == ("Fe4.2Si1.5O12", "Fe-O-Si", "silicate", "trigonal", "R3m", "cronstedtite")
    assert "Fe4.2Si1.5O12" in structure_caption(named["amcsd-22"])


def test_near_integer_amounts_reduce(named) -> None:
    """Plazolite's Si16.008 is written Si16, so the garnet formula reduces."""
    facts = structure_facts(named["amcsd-17"])
    assert (facts.formula, facts.crystal_system, facts.space_group) == (
        "Ca3Al2Si2O12",
        "cubic",
        "Ia-3d",
    )


def test_record_without_mineral_name(named) -> None:
    record = named["amcsd-107"]
    assert not record.meta["mineral"]
    caption = structure_caption(record)
    assert "CuCO3" in caption and "trigonal carbonate" in caption and "R-3c" in caption
    assert "mineral" not in caption and ", ," not in caption


def test_readable_formula() -> None:
    assert readable_formula(Composition("Ca2C1.99998O5.99994")) == "CaCO3"
    assert readable_formula(Composition("Ca24Al16Si16.008O96")) == "Ca3Al2Si2O12"
    assert readable_formula(Composition("Na2Cl2")) == "NaCl"
    assert readable_formula(Composition("Si1O11")) == "SiO11"
    assert readable_formula(Composition("Fe0.004Mg2Si1O4")) == "Mg2Fe0.01SiO4"


def test_templates_are_spread_and_fixed_per_record(named) -> None:
    record = named["amcsd-3"]
    facts = structure_facts(record)
    phrasings = {template(facts) for template in captions.TEMPLATES}
    assert len(phrasings) == len(captions.TEMPLATES)
    assert structure_caption(record) in phrasings
    assert structure_caption(record) == structure_caption(record)
    for phrasing in phrasings:  # every template states every fact
        assert all(fact in phrasing for fact in ("galena", "PbS", "Pb-S", "sulfide", "Fm-3m"))


def test_caption_group_ids_follow_the_described_material(named) -> None:
    galena = structure_facts(named["amcsd-3"])
    assert caption_group_id(galena) == caption_group_id(galena._replace(chemical_system="x"))
    assert caption_group_id(galena) != caption_group_id(galena._replace(formula="PbSe"))
    assert caption_group_id(galena) != NO_CAPTION


# ------------------------------------------------------------------------------- stores
def test_caption_stores_hold_each_records_caption_and_rebuild_on_a_new_recipe(
    records_file: Path, tmp_path: Path, monkeypatch
) -> None:
    source = RecordSource.read(records_file)
    stores = build_structure_caption_stores(source, tmp_path, "tiny-random", 64)
    records = [CrystalRecord.from_json(line) for line in source.lines]
    assert len(stores.texts) == len(stores.tokens) == len(records)
    for index in (0, 7, len(records) - 1):
        assert stores.caption(index) == structure_caption(records[index])
        expected = caption_group_id(structure_facts(records[index]))
        assert stores.texts[index]["group_id"][0] == expected
    assert stores.features is None
    manifest = json.loads((tmp_path / "texts" / "manifest.json").read_text())
    monkeypatch.setattr(captions, "CAPTION_RECIPE_VERSION", 2)
    build_structure_caption_stores(source, tmp_path, "tiny-random", 64)
    rebuilt = json.loads((tmp_path / "texts" / "manifest.json").read_text())
    assert rebuilt["key"]["recipe"] == 2 and manifest["key"]["recipe"] == 1
    tokens = json.loads((tmp_path / "tokens" / "manifest.json").read_text())
    assert tokens["source"].endswith(captions.key_hash(rebuilt["key"]))


# ------------------------------------------------------------------------------ mixing
def test_draws_hit_the_fraction_and_depend_on_seed_and_epoch_only() -> None:
    items = np.arange(20_000)
    draws = caption_draws(0, 3, items)
    assert abs((draws < 0.3).mean() - 0.3) < 0.015  # 4.6 sigma
    assert np.array_equal(draws, caption_draws(0, 3, items))
    shuffled = np.random.default_rng(1).permutation(items)
    assert np.array_equal(caption_draws(0, 3, shuffled), draws[shuffled])  # per item, no order
    agree = ((draws < 0.3) == (caption_draws(0, 4, items) < 0.3)).mean()
    assert abs(agree - (0.3**2 + 0.7**2)) < 0.015  # another epoch draws independently
    assert not np.array_equal(caption_draws(1, 3, items), draws)


def test_mix_captions_takes_rows_features_and_groups() -> None:
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 8], [5, 6, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
        "group_ids": torch.tensor([10, 11]),
        "text_features": torch.zeros(2, 3),
        "item_id": torch.tensor([0, 1]),
        "caption_input_ids": torch.tensor([[9, 9], [9, 0]]),
        "caption_attention_mask": torch.tensor([[1, 1], [1, 0]]),
        CAPTION_GROUP_ID: torch.tensor([20, 21]),
        "caption_text_features": torch.ones(2, 3),
    }
    mixed = mix_captions(batch, torch.tensor([True, False]))
    assert mixed["input_ids"].tolist() == [[9, 9], [5, 6]]  # padding-only columns trimmed
    assert mixed["attention_mask"].tolist() == [[1, 1], [1, 1]]
    assert mixed["group_ids"].tolist() == [20, 11]
    assert mixed["text_features"].tolist() == [[1.0] * 3, [0.0] * 3]
    assert set(mixed) == {"input_ids", "attention_mask", "group_ids", "text_features", "item_id"}
    batch[CAPTION_GROUP_ID] = torch.tensor([NO_CAPTION, 21])  # no caption: keeps its title
    assert mix_captions(batch, torch.tensor([True, True]))["group_ids"].tolist() == [10, 21]


@pytest.fixture(scope="module")
def captioned_module(records_file: Path, tmp_path_factory) -> CrystalTextDataModule:
    """120 real records, a frozen tiny text tower with cached features, p = 0.5."""
    dm = CrystalTextDataModule(
        records=str(records_file),
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        text=TextConfig(model="tiny-random", freeze=True),
        graph=TINY_GRAPH,
        split_fractions=(0.8, 0.1, 0.1),
        batch_size=8,
        eval_batch_size=16,
        structure_captions=0.5,
    )
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _epoch(loader: ResumableDataLoader, epoch: int) -> list[dict]:
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_training_pairs_take_their_caption_when_drawn(captioned_module) -> None:
    dm = captioned_module
    loader = dm.train_dataloader()
    assert isinstance(loader, CaptionMixingLoader)
    stores, train = dm.structure_caption_stores, dm.datasets["train"]
    title_features = train.per_record["text_features"]
    drawn = []
    for batch in _epoch(loader, 2):
        use = caption_draws(loader.sampler.seed, 2, batch["item_id"]) < 0.5
        drawn += use.tolist()
        for row, record_index in enumerate(batch["record_index"].tolist()):
            tokens, features = (
                (stores.tokens, stores.features) if use[row] else (train.tokens, title_features)
            )
            ids = torch.from_numpy(tokens[record_index]["input_ids"].astype(np.int64))
            assert torch.equal(batch["input_ids"][row, : len(ids)], ids)
            assert batch["attention_mask"][row].sum() == len(ids)
            feature = torch.tensor(features[record_index]["features"][0])
            assert torch.equal(batch["text_features"][row], feature)
            if use[row]:
                assert batch["group_ids"][row] == stores.texts[record_index]["group_id"][0]
    assert 0.3 < np.mean(drawn) < 0.7  # 88 pairs, p = 0.5
    assert "caption_input_ids" not in batch


def test_epochs_differ_and_repeat(captioned_module) -> None:
    loader = captioned_module.train_dataloader()
    first, again, other = _epoch(loader, 1), _epoch(loader, 1), _epoch(loader, 2)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])
    by_item = {
        epoch: {
            item: group
            for batch in batches
            for item, group in zip(
                batch["item_id"].tolist(), batch["group_ids"].tolist(), strict=True
            )
        }
        for epoch, batches in ((1, first), (2, other))
    }
    assert by_item[1].keys() == by_item[2].keys()
    assert any(by_item[1][item] != by_item[2][item] for item in by_item[1])


def test_resume_mid_epoch_gives_the_same_captions(captioned_module) -> None:
    full = _epoch(captioned_module.train_dataloader(), 3)
    resumed = captioned_module.train_dataloader()
    resumed.load_state_dict({"epoch": 3, "batches": 4})
    rest = list(resumed)
    assert len(rest) == len(full) - 4
    for a, b in zip(full[4:], rest, strict=True):
        assert torch.equal(a["input_ids"], b["input_ids"])
        assert torch.equal(a["group_ids"], b["group_ids"])
        assert torch.equal(a["text_features"], b["text_features"])


def test_validation_and_test_use_titles(captioned_module) -> None:
    dm = captioned_module
    for loader, split in ((dm.val_dataloader(), "val"), (dm.test_dataloader(), "test")):
        dataset = dm.datasets[split]
        batch = next(iter(loader))
        for row, record_index in enumerate(batch["record_index"].tolist()):
            ids = dataset.tokens[record_index]["input_ids"]
            assert batch["input_ids"][row, : len(ids)].tolist() == ids.tolist()
        assert "caption_input_ids" not in batch


def test_off_by_default_builds_no_caption_store(records_file: Path, tmp_path: Path) -> None:
    dm = CrystalTextDataModule(
        records=str(records_file),
        cache_dir=str(tmp_path),
        text=TextConfig(model="tiny-random"),
        graph=TINY_GRAPH,
        batch_size=8,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert type(dm.train_dataloader()) is ResumableDataLoader
    assert not (dm.cache_root / "structure_captions").exists()
    with pytest.raises(ValueError, match="structure_captions"):
        CrystalTextDataModule(records=str(records_file), structure_captions=1.5)
