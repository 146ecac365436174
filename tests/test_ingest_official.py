"""Official CLaSP inputs: the COD ``data`` table CSV + a COD mirror, and the abstracts CSV."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from clasp_pl.commands.data import main as data_main
from clasp_pl.data.ingest import cod_mirror_path, ingest_folder, load_abstracts, load_cod_table
from clasp_pl.data.records import read_records
from helpers.data import COD_SAMPLE, shared_path

IDS = sorted(path.stem for path in COD_SAMPLE.glob("*.cif"))


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def official(tmp_path: Path) -> dict[str, Path]:
    """A COD mirror of the ten sample CIFs, a COD table and an abstracts CSV in tmp_path."""
    shared_path(COD_SAMPLE)
    mirror = tmp_path / "cod" / "cif"
    for cod_id in IDS:
        target = cod_mirror_path(mirror, cod_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(COD_SAMPLE / f"{cod_id}.cif", target)
    # COD's data table: ids as pandas writes an int column, one row without a title and one
    # row whose CIF is not in the mirror
    rows = [
        [cod_id, f"Table title {cod_id}", f"10.1/{cod_id}", "2001", "J. Test", ""] for cod_id in IDS
    ]
    rows[1][1] = ""
    rows.append(["9999999", "Missing file", "", "", "", ""])
    header = ["file", "title", "doi", "year", "journal", "mineral"]
    rows[0][5] = "Halite"
    table = _write_csv(tmp_path / "cod_metadata.csv", header, rows)
    # retrieve_abstract.py's CSV: pandas index column with an empty header, float File ids
    abstracts = _write_csv(
        tmp_path / "retrieved_abstract.csv",
        ["", "DOI", "File", "Title", "Abstract"],
        [
            [
                "0",
                f"10.1/{IDS[0]}",
                f"{IDS[0]}.0",
                "Crossref title",
                "<jats:p>An  abstract.</jats:p>",
            ],
            ["1", f"10.1/{IDS[1]}", IDS[1], "Crossref title 1", "Second abstract."],
        ],
    )
    return {"mirror": mirror, "table": table, "abstracts": abstracts}


def test_mirror_path_layout() -> None:
    assert cod_mirror_path("/cod", "1000041") == Path("/cod/1/00/00/1000041.cif")
    assert cod_mirror_path("/cod", "2345678") == Path("/cod/2/34/56/2345678.cif")


def test_loaders_read_official_columns(official: dict[str, Path]) -> None:
    table = load_cod_table(official["table"])
    assert list(table)[: len(IDS)] == IDS
    assert table[IDS[0]] == {
        "title": f"Table title {IDS[0]}",
        "doi": f"10.1/{IDS[0]}",
        "year": "2001",
        "journal": "J. Test",
        "mineral": "Halite",
    }
    abstracts = load_abstracts(official["abstracts"])
    assert abstracts[IDS[0]]["abstract"] == "An abstract."  # JATS tags and spaces removed
    assert abstracts[IDS[1]]["title"] == "Crossref title 1"


def test_cod_table_ingest_joins_text(official: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cod.jsonl.gz"
    summary = ingest_folder(
        official["mirror"],
        out,
        cod_table=official["table"],
        abstracts=official["abstracts"],
        progress=False,
    )
    records = {record.id: record for record in read_records(out)}
    assert summary["total"] == len(IDS) + 1
    assert summary["rejected"].get("unreadable") == 1  # 9999999 is not in the mirror
    assert summary["kept"] + sum(summary["rejected"].values()) == summary["total"]
    first, second = records[IDS[0]], records[IDS[1]]
    # the COD table's title wins over Crossref's; the abstract comes from the abstracts CSV
    assert first.title == f"Table title {IDS[0]}"
    assert first.abstract == "An abstract."
    assert first.doi == f"10.1/{IDS[0]}"
    assert first.meta["journal"] == "J. Test" and first.meta["mineral"] == "Halite"
    assert first.source == str(cod_mirror_path(official["mirror"], IDS[0]))
    # no title in the table: Crossref's title fills it
    assert second.title == "Crossref title 1" and second.abstract == "Second abstract."
    assert all(
        records[cod_id].title == f"Table title {cod_id}" for cod_id in IDS[2:] if cod_id in records
    )


def test_abstracts_join_without_table(official: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "walk.jsonl.gz"
    ingest_folder(official["mirror"], out, abstracts=official["abstracts"], progress=False)
    records = {record.id: record for record in read_records(out)}
    assert records[IDS[0]].abstract == "An abstract."
    assert records[IDS[0]].title == "Crossref title"  # joined text wins over the CIF's fields
    assert not records[IDS[2]].abstract


def test_cli_options(official: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.jsonl.gz"
    argv = ["ingest", "--cifs", str(official["mirror"]), "--cod-table", str(official["table"])]
    assert (
        data_main(
            [*argv, "--abstracts", str(official["abstracts"]), "--out", str(out), "--no-progress"]
        )
        == 0
    )
    assert "unreadable: 1" in capsys.readouterr().out
    assert read_records(out)[0].id == IDS[0]
    bad = ["ingest", "--table", str(official["table"]), "--cod-table", str(official["table"])]
    assert data_main([*bad, "--out", str(tmp_path / "x.jsonl.gz")]) == 2


def test_metadata_by_doi_wins_over_the_cod_table(official: dict[str, Path], tmp_path: Path) -> None:
    metadata = tmp_path / "meta.jsonl"
    lines = [
        {"doi": f"10.1/{IDS[2]}", "title": "Meta title", "keywords": ["k1", "k2"]},
        {"id": IDS[3], "title": "Id title"},
        {"doi": f"10.1/{IDS[3]}", "title": "Doi title", "abstract": "Doi abstract"},
    ]
    metadata.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "meta.jsonl.gz"
    ingest_folder(
        official["mirror"],
        out,
        metadata=metadata,
        cod_table=official["table"],
        abstracts=official["abstracts"],
        progress=False,
    )
    records = {record.id: record for record in read_records(out)}
    assert (records[IDS[2]].title, records[IDS[2]].keywords) == ("Meta title", ["k1", "k2"])
    # the line found by id wins over the one found by DOI, which fills the rest
    assert (records[IDS[3]].title, records[IDS[3]].abstract) == ("Id title", "Doi abstract")
    assert records[IDS[4]].title == f"Table title {IDS[4]}"
    assert records[IDS[0]].meta["mineral"] == "Halite"  # COD table meta columns still kept
