"""``clasp data``: defaults come from the library, and an output symlink is written through."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

from clasp_pl.commands import data as data_command
from clasp_pl.data.ingest import IngestOptions
from clasp_pl.data.records import read_records

PEROV = Path(__file__).resolve().parents[2] / "shared" / "data" / "perov_5" / "val.csv"


def _small_table(path: Path, rows: int) -> Path:
    with PEROV.open() as source, path.open("w", newline="") as target:
        reader = csv.DictReader(source)
        writer = csv.DictWriter(target, fieldnames=["material_id", "cif"])
        writer.writeheader()
        for row in itertools.islice(reader, rows):
            writer.writerow({"material_id": row["material_id"], "cif": row["cif"]})
    return path


def test_parser_defaults_are_the_library_defaults():
    parser = data_command.build_parser()
    ingest = parser.parse_args(["ingest", "--table", "t.csv", "--out", "o.jsonl.gz"])
    options = IngestOptions()
    assert ingest.max_atoms == options.max_atoms
    assert ingest.max_cell_atoms == options.max_cell_atoms
    assert ingest.occupancy == options.occupancy
    assert ingest.reader == options.reader
    assert ingest.time_limit == options.time_limit
    assert ingest.worker_memory_gb == options.worker_memory_gb
    default = parser.parse_args(["build-default"])
    assert default.max_atoms == options.max_atoms
    assert default.out == data_command.DEFAULT_BUILD_OUT


def test_output_symlink_is_written_through(tmp_path):
    """Writing to a link (like data/amcsd_default.jsonl.gz -> the packaged file) updates the
    link's target and its siblings there; the link stays a link."""
    table = _small_table(tmp_path / "perov.csv", 3)
    packaged = tmp_path / "resources"
    packaged.mkdir()
    target = packaged / "records.jsonl.gz"
    target.write_bytes(b"stale")
    link = tmp_path / "records.jsonl.gz"
    link.symlink_to(target)

    code = data_command.main(["ingest", "--table", str(table), "--out", str(link), "--no-progress"])

    assert code == 0
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert len(read_records(target)) == 3
    assert (packaged / "records.rejects.jsonl").exists()
    assert not (tmp_path / "records.rejects.jsonl").exists()
