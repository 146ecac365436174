"""Keyword captions: offline YAKE extraction, both input formats, applying them to records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clasp_pl.commands.data import main as data_main
from clasp_pl.data.keywords import (
    KeywordExtractor,
    KeywordFilter,
    apply_keywords,
    extract_keywords,
    load_keyword_captions,
    normalise_keyword,
)
from clasp_pl.data.records import write_records
from helpers.data import first_records

TITLE = (
    "Single-crystal X-ray diffraction study and crystal structure refinement of synthetic "
    "Ni-Mg olivine solid solutions: cation ordering in olivines at high pressure"
)


@pytest.fixture(scope="module")
def extractor() -> KeywordExtractor:
    return KeywordExtractor(max_keywords=10)


def test_technique_words_removed_and_specific_ones_kept(extractor: KeywordExtractor) -> None:
    keywords = extractor(TITLE)
    keys = {normalise_keyword(k) for k in keywords}
    for generic in ("crystal structure", "x-ray diffraction", "refinement", "study", "crystal"):
        assert normalise_keyword(generic) not in keys
    assert not any("diffraction" in k.lower() for k in keywords)
    assert any("olivine" in k.lower() for k in keywords)
    assert any("cation ordering" in k.lower() for k in keywords)


def test_at_most_max_and_deduplicated(extractor: KeywordExtractor) -> None:
    assert len(KeywordExtractor(max_keywords=2)(TITLE)) <= 2
    keys = [normalise_keyword(k) for k in extractor(TITLE)]
    assert len(keys) == len(set(keys))
    assert len(extractor(TITLE)) <= 10
    ranked = ["Olivines", "olivine", "OLIVINE solid solutions", "solid solutions", "Olivine"]
    assert KeywordFilter(max_keywords=10)(ranked) == ["Olivines", "OLIVINE solid solutions"]


def test_formula_tokens_are_kept(extractor: KeywordExtractor) -> None:
    keywords = extractor("Rietveld refinement of Sr5(AsO4)3Cl from synchrotron data")
    assert keywords == ["Sr5(AsO4)3Cl"]


def test_generic_terms_are_configurable() -> None:
    ranked = ["olivine", "cation ordering", "high pressure"]
    assert KeywordFilter(["olivine", "pressure", "high"])(ranked) == ["cation ordering"]


def test_extract_skips_records_with_keywords_or_no_text(extractor: KeywordExtractor) -> None:
    records = first_records(4)
    records[0].keywords = ["kept"]
    records[1].title = ""
    mapping = extract_keywords(records, extractor, progress=False)
    assert records[0].id not in mapping and records[1].id not in mapping
    assert set(mapping) == {records[2].id, records[3].id}


def test_cli_writes_json(tmp_path: Path) -> None:
    records = first_records(5)
    path = tmp_path / "r.jsonl.gz"
    write_records(records, path)
    out = tmp_path / "k.json"
    argv = ["keywords", "--records", str(path), "--out", str(out), "--max", "3", "--no-progress"]
    assert data_main(argv) == 0
    mapping = json.loads(out.read_text())
    assert set(mapping) == {r.id for r in records}
    assert all(len(keywords) <= 3 for keywords in mapping.values())


def test_load_plain_mapping(tmp_path: Path) -> None:
    path = tmp_path / "plain.json"
    plain = {
        "1": ["Garnet", "garnets", "X-ray diffraction", "  Almandine "],
        "2": ["Crystal Structure"],  # nothing left after exclusion
        "3": "not a list",
        "4": ["ok", 5],
    }
    path.write_text(json.dumps(plain))
    mapping, stats = load_keyword_captions(path)
    assert mapping == {"1": ["Garnet", "Almandine"]}
    assert (stats.ids, stats.empty, stats.malformed, stats.invalid_json) == (1, 1, 1, 1)


def test_load_official_release_format(tmp_path: Path) -> None:
    answer = [
        {"ID": "1000041", "Keywords": ["Rock salt", "Powder Diffraction", "Halides"]},
        {"ID": 1000050, "Keywords": ["Sylvite"]},
        {"Keywords": ["no id"]},
    ]
    outer = {
        "0": "```json\n" + json.dumps(answer) + "\n```",  # fenced, as the LLM answered
        "1": json.dumps([{"ID": "9000046", "Keywords": ["Quartz", "quartz"]}]),  # bare
        "2": '```json\n[{"ID": "1", "Keywords": [\n```',  # truncated answer
        "3": "```json\n" + json.dumps({"ID": "1000050", "Keywords": ["Sylvite", "KCl"]}) + "```",
    }
    path = tmp_path / "keyword_captions.json"
    path.write_text(json.dumps(outer))
    mapping, stats = load_keyword_captions(path)
    assert mapping == {
        "1000041": ["Rock salt", "Halides"],
        "1000050": ["Sylvite", "KCl"],
        "9000046": ["Quartz"],
    }
    assert (stats.invalid_json, stats.malformed, stats.duplicates) == (1, 1, 1)
    assert "1 invalid JSON" in stats.summary()


def test_apply_keywords(tmp_path: Path) -> None:
    records = first_records(3)
    mapping = {records[0].id: ["spinel", "cation ordering"], "unknown": ["x"]}
    applied = apply_keywords(records, mapping)
    assert applied[0].keywords == ["spinel", "cation ordering"]
    assert applied[1].keywords == records[1].keywords
    assert len(applied) == 3


def test_default_keywords_file_loads() -> None:
    path = Path(__file__).resolve().parents[1] / "data" / "amcsd_default.keywords.json"
    mapping, stats = load_keyword_captions(path)
    assert stats.ids > 8000 and stats.malformed == stats.invalid_json == 0
    assert all(1 <= len(keywords) <= 10 for keywords in mapping.values())
