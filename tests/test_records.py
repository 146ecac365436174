"""Record format 2: per-site occupancies, and format-1 lines that still load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pymatgen.core import Lattice, Species, Structure

from clasp_pl.data.cif import read_cif
from clasp_pl.data.ingest import IngestOptions, Job, job_to_record
from clasp_pl.data.records import (
    RECORD_FORMAT_VERSION,
    CrystalRecord,
    iter_records,
    read_records,
    write_records,
)
from helpers.data import DEFAULT_RECORDS, SHARED_DATA

MNO2 = SHARED_DATA / "cif_edge_cases" / "diffpy__MnO2.cif"


def test_format_one_lines_load_as_ordered_records() -> None:
    record = next(iter_records(DEFAULT_RECORDS))  # the committed file predates format 2
    assert record.occupancies == [] and record.is_ordered
    assert "occupancies" not in record.to_json()  # an ordered record writes format-1 bytes
    assert record.composition.num_atoms == record.num_sites
    assert record.to_structure() == record.to_ordered_structure()
    assert RECORD_FORMAT_VERSION == 2


def test_disordered_record_round_trip(tmp_path: Path) -> None:
    structure = Structure(
        Lattice.cubic(4.2),
        [{Species("Fe", 2): 0.6, Species("Fe", 3): 0.1, "Mg": 0.2}, "O", {"O": 0.5}],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]],
    )
    record = CrystalRecord.from_structure("fe", structure, title="A mixed oxide")
    assert record.species == ["Fe", "O", "O"]  # dominant element of each site
    assert record.occupancies == [{"Fe": 0.7, "Mg": 0.2}, {"O": 1.0}, {"O": 0.5}]
    assert record.composition.as_dict() == pytest.approx({"Fe": 0.7, "Mg": 0.2, "O": 1.5})
    assert not record.is_ordered
    reported = record.to_structure()
    assert not reported.is_ordered and reported.composition == record.composition
    ordered = record.to_ordered_structure()
    assert ordered.is_ordered and ordered.composition.as_dict() == {"Fe": 1.0, "O": 2.0}
    write_records([record], tmp_path / "r.jsonl.gz")
    (again,) = read_records(tmp_path / "r.jsonl.gz")
    assert again == record and again.to_json() == record.to_json()
    assert json.loads(record.to_json())["occupancies"][0] == {"Fe": 0.7, "Mg": 0.2}


def test_occupancies_are_rounded_for_stable_bytes() -> None:
    sites = [{"Sn": 0.9000000001, "In": 0.06720000004}]
    record = CrystalRecord.from_sites(
        "x", [[5, 0, 0], [0, 5, 0], [0, 0, 5]], [[0, 0, 0]], ["Sn"], sites
    )
    assert record.occupancies == [{"Sn": 0.9, "In": 0.0672}]
    with pytest.raises(ValueError, match="2 occupancy entries for 1 sites"):
        CrystalRecord("y", record.lattice, ["Sn"], [[0, 0, 0]], occupancies=sites * 2)


def test_a_parsed_disordered_cif_becomes_a_record() -> None:
    parsed = read_cif(MNO2)
    record = job_to_record(
        Job("mno2", str(MNO2), path=str(MNO2)), IngestOptions(require_text=False)
    )
    assert record.composition.as_dict() == pytest.approx({"Mn": 1.8568, "O": 5.7184})
    assert record.composition.as_dict() == pytest.approx(parsed.composition)
    assert record.meta["n_disordered_sites"] == 6 and record.num_sites == 10
