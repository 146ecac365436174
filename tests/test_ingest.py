"""Ingestion of CIF folders (COD layout, metadata) and tables (perov_5-style CSV, JSONL)."""

from __future__ import annotations

import csv
import json
import shutil
from itertools import islice
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from clasp_pl.data.commands import main
from clasp_pl.data.ingest import (
    IngestOptions,
    ingest_folder,
    ingest_table,
    rejects_path_for,
)
from clasp_pl.data.records import read_records
from helpers.data import COD_SAMPLE, PEROV_TABLE

pytestmark = pytest.mark.skipif(not COD_SAMPLE.is_dir(), reason="shared sample data missing")


@pytest.fixture
def cod_mirror(tmp_path: Path) -> Path:
    """COD mirror layout ``cif/1/00/00/1000041.cif`` plus one broken and one text-less CIF."""
    root = tmp_path / "cif"
    for path in sorted(COD_SAMPLE.glob("*.cif")):
        target = root / path.stem[0] / path.stem[1:3] / path.stem[3:5] / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    broken = root / "9" / "99" / "99" / "9999999.cif"
    broken.parent.mkdir(parents=True)
    broken.write_bytes((COD_SAMPLE / "1000041.cif").read_bytes()[:1200])
    text = (COD_SAMPLE / "1000050.cif").read_text(encoding="utf-8")
    start = text.index("_publ_section_title")
    end = text.index(";", text.index(";", start) + 1) + 1
    (root / "9" / "99" / "99" / "9999998.cif").write_text(text[:start] + text[end:])
    return root


def test_folder_with_metadata(cod_mirror: Path, tmp_path: Path) -> None:
    metadata = tmp_path / "meta.jsonl"
    lines = [
        {"id": "1000041", "title": "Metadata title", "abstract": "NaCl.", "keywords": ["salt"]},
        {"doi": "10.1107/S0108270189004269", "title": "By DOI", "year": 2000},
    ]
    metadata.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    out = tmp_path / "out" / "cod.jsonl.gz"
    summary = ingest_folder(cod_mirror, out, metadata=metadata, progress=False)

    assert summary["kept"] == 10 and summary["total"] == 12
    assert summary["rejected"] == {"missing_text": 1, "unparseable": 1}
    records = {record.id: record for record in read_records(out)}
    assert set(records) == {path.stem for path in COD_SAMPLE.glob("*.cif")}
    nacl = records["1000041"]
    assert (nacl.title, nacl.abstract, nacl.keywords) == ("Metadata title", "NaCl.", ["salt"])
    assert nacl.group == "doi:10.1107/s0365110x65002244"
    assert records["1101051"].title == "By DOI" and records["1101051"].meta["year"] == 2000
    assert records["1000050"].title.startswith("Energiedispersion")
    assert records["1000050"].meta["year"] == 1981

    rejects = [json.loads(line) for line in rejects_path_for(out).read_text().splitlines()]
    assert {(r["id"], r["reason"]) for r in rejects} == {
        ("9999999", "unparseable"),
        ("9999998", "missing_text"),
    }
    assert all(r["source"] in r["message"] for r in rejects)


def test_workers_keep_order(cod_mirror: Path, tmp_path: Path) -> None:
    options = IngestOptions(require_text=False)
    ingest_folder(cod_mirror, tmp_path / "one.jsonl.gz", options=options, progress=False)
    summary = ingest_folder(
        cod_mirror, tmp_path / "two.jsonl.gz", options=options, workers=2, progress=False
    )
    assert summary["kept"] == 11
    one = [r.to_json() for r in read_records(tmp_path / "one.jsonl.gz")]
    two = [r.to_json() for r in read_records(tmp_path / "two.jsonl.gz")]
    assert one == two


@pytest.mark.skipif(not PEROV_TABLE.exists(), reason="perov_5 sample missing")
def test_perov_table(tmp_path: Path) -> None:
    table = tmp_path / "perov.csv"
    with open(PEROV_TABLE, newline="") as source, open(table, "w", newline="") as target:
        rows = list(islice(csv.DictReader(source), 40))
        rows[3]["cif"] = rows[3]["cif"][:200]  # truncated CIF
        writer = csv.DictWriter(target, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "perov.jsonl.gz"
    summary = ingest_table(table, out, progress=False)
    assert summary["kept"] == 39 and summary["rejected"] == {"unparseable": 1}
    record = read_records(out)[0]
    assert record.id == rows[0]["material_id"]
    assert record.num_sites == 5 and not record.has_text
    assert record.meta["heat_ref"] == pytest.approx(float(rows[0]["heat_ref"]))
    assert set(record.meta) >= {"heat_all", "heat_ref", "dir_gap", "ind_gap"}
    assert "formula" not in record.meta and "" not in record.meta
    texts = ingest_table(table, tmp_path / "t.jsonl.gz", options=IngestOptions(), progress=False)
    assert texts["rejected"]["missing_text"] == 39


def test_jsonl_table_with_paths_and_bad_bytes(tmp_path: Path) -> None:
    shutil.copy(COD_SAMPLE / "1000041.cif", tmp_path / "a.cif")
    (tmp_path / "b.cif").write_bytes(b"data_b\n_publ_section_title '\xe9t\xe9'\n")
    rows = [
        {"id": "a", "path": "a.cif", "title": "Salt", "keywords": "rock; salt", "band_gap": 5.0},
        {"id": "b", "path": "b.cif", "title": "Summer"},
        {"id": "c", "path": "missing.cif", "title": "Nothing"},
        {"id": "d", "title": "No structure at all"},
    ]
    table = tmp_path / "table.jsonl"
    table.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    summary = ingest_table(table, tmp_path / "out.jsonl.gz", progress=False)
    # b.cif's latin-1 bytes decode (cp1252); it is then refused for having no atoms
    assert summary["rejected"] == {"no_sites": 1, "unparseable": 1, "unreadable": 1}
    (record,) = read_records(tmp_path / "out.jsonl.gz")
    assert record.title == "Salt" and record.keywords == ["rock", "salt"]
    assert record.meta["band_gap"] == 5.0


def test_non_utf8_csv_row_is_decoded_and_noted(tmp_path: Path) -> None:
    cif = (COD_SAMPLE / "1000041.cif").read_bytes()
    good = b'"' + cif.replace(b'"', b'""') + b'"'
    bad = good.replace(b"sodium", b"s\xf6dium", 1)
    assert bad != good
    table = tmp_path / "t.csv"
    table.write_bytes(b"id,cif\nok," + good + b"\nbad," + bad + b"\n")
    summary = ingest_table(table, tmp_path / "o.jsonl.gz", progress=False)
    assert summary["kept"] == 2 and summary["rejected"] == {}
    ok, decoded = read_records(tmp_path / "o.jsonl.gz")
    assert "text_encoding" not in ok.meta and decoded.meta["text_encoding"] == "cp1252"
    assert "södium" in decoded.title and decoded.species == ok.species


def test_command_line(cod_mirror: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.jsonl.gz"
    code = main(["ingest", "--cifs", str(cod_mirror), "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "kept 10 of 12" in printed and "missing_text: 1" in printed
    code = main(
        [
            "ingest",
            "--cifs",
            str(cod_mirror),
            "--out",
            str(out),
            "--no-require-text",
            "--occupancy",
            "skip",
            "--reader",
            "pymatgen",
            "--workers",
            "2",
            "--no-progress",
        ]
    )
    assert code == 0 and "kept 11 of 12" in capsys.readouterr().out


def test_doi_metadata_keywords_string_is_split_like_a_table_cell(
    cod_mirror: Path, tmp_path: Path
) -> None:
    metadata = tmp_path / "meta.jsonl"
    line = {"doi": "10.1107/S0108270189004269", "keywords": "garnet; spinel ;"}
    metadata.write_text(json.dumps(line) + "\n")
    out = tmp_path / "kw.jsonl.gz"
    ingest_folder(cod_mirror, out, metadata=metadata, progress=False)
    records = {record.id: record for record in read_records(out)}
    assert records["1101051"].keywords == ["garnet", "spinel"]


def _cif_row(record_id: str, structure: Structure) -> dict[str, str]:
    return {"id": record_id, "cif": str(CifWriter(structure))}


def test_disorder_and_primitive_cell_are_noted_in_meta(tmp_path: Path) -> None:
    rocksalt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0] * 3, [0.5] * 3]
    )
    vacant = Structure(Lattice.cubic(4.0), [{"Fe": 0.2}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rows = [
        _cif_row("super", rocksalt * (3, 3, 3)),  # 216 sites > max_atoms: the primitive cell
        _cif_row("vacant", vacant),  # a mostly empty Fe site
        _cif_row("plain", rocksalt),
    ]
    table = tmp_path / "t.jsonl"
    table.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    ingest_table(table, tmp_path / "t.jsonl.gz", progress=False)
    records = {record.id: record for record in read_records(tmp_path / "t.jsonl.gz")}
    assert records["super"].meta["primitive_cell"] is True and records["super"].num_sites == 2
    vacant_record = records["vacant"]  # kept partially occupied by the default policy
    assert vacant_record.meta["n_disordered_sites"] == 1
    assert "n_dropped_sites" not in vacant_record.meta
    assert vacant_record.occupancies == [{"Fe": 0.2}, {"O": 1.0}]
    assert vacant_record.composition.as_dict() == {"Fe": 0.2, "O": 1.0}
    assert not {"primitive_cell", "n_dropped_sites", "n_disordered_sites"} & set(
        records["plain"].meta
    )
    majority = IngestOptions(occupancy="majority", require_text=False)
    summary = ingest_table(table, tmp_path / "m.jsonl.gz", options=majority, progress=False)
    assert summary["rejected"] == {"formula_mismatch": 1}  # Fe0.2 O1 (CifWriter) is not O
    majority = IngestOptions(occupancy="majority", require_text=False, check_formula=False)
    ingest_table(table, tmp_path / "m.jsonl.gz", options=majority, progress=False)
    records = {record.id: record for record in read_records(tmp_path / "m.jsonl.gz")}
    assert records["vacant"].meta["n_dropped_sites"] == 1  # the majority policy drops it
    assert records["vacant"].species == ["O"] and records["vacant"].is_ordered


def test_command_line_bounds(cod_mirror: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bounded.jsonl.gz"
    argv = ["ingest", "--cifs", str(cod_mirror), "--out", str(out), "--no-require-text"]
    assert main([*argv, "--max-cell-atoms", "4", "--shard-size", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "too_many_atoms:" in printed  # NaCl (8 atoms in the cell) and the other larger cells
    kept = {record.id: record.num_sites for record in read_records(out)}
    assert kept and max(kept.values()) <= 4 and "1000041" not in kept
    rejects = [json.loads(line) for line in rejects_path_for(out).read_text().splitlines()]
    nacl = next(r for r in rejects if r["id"] == "1000041")
    assert nacl["reason"] == "too_many_atoms" and "max_cell_atoms=4" in nacl["message"]
