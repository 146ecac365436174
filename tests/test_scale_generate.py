"""The scale generator (bench/scale_generate.py): deterministic by seed, prefix-stable, real
perturbations of real structures, and CIFs that ingestion reads back to the same structures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice

from clasp_pl.data.ingest import IngestOptions, Job, job_to_record
from clasp_pl.data.records import CrystalRecord, iter_record_lines, iter_records
from helpers.data import REPO

sys.path.insert(0, str(REPO / "bench"))
import scale_generate  # noqa: E402

OPTIONS = scale_generate.ScaleOptions(seed=3, chunk=20)


@pytest.fixture(scope="module")
def base() -> scale_generate.BaseData:
    return scale_generate.BaseData.default()


@pytest.fixture(scope="module")
def generated(tmp_path_factory, base, monkeypatch_module) -> Path:
    monkeypatch_module.setattr(scale_generate, "_BASE", base)
    return scale_generate.generate(60, tmp_path_factory.mktemp("scale") / "a", OPTIONS)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_same_seed_same_bytes_other_seed_other_data(generated, tmp_path) -> None:
    again = scale_generate.generate(60, tmp_path / "b", OPTIONS)
    assert again.read_bytes() == generated.read_bytes()
    cifs = sorted((generated.parent / "cif").rglob("*.cif"))
    assert len(cifs) == 60
    for path in cifs:
        assert (again.parent / path.relative_to(generated.parent)).read_text() == path.read_text()
    other = scale_generate.ScaleOptions(seed=4, chunk=20)
    changed = scale_generate.generate(60, tmp_path / "c", other, cifs=False)
    assert _structures(changed) != _structures(generated)


def _structures(path: Path) -> list[tuple]:
    """What a record holds apart from where its CIF was written."""
    return [
        (r.id, r.title, r.group, r.lattice, r.frac_coords, r.species, r.occupancies, r.meta)
        for r in iter_records(path)
    ]


def test_a_smaller_run_is_a_prefix_of_a_larger_one(generated, tmp_path) -> None:
    small = scale_generate.generate(40, tmp_path / "small", OPTIONS, cifs=False)
    assert list(iter_record_lines(small)) == list(iter_record_lines(generated))[:40]


def test_structures_are_strained_swapped_and_supercells_of_real_ones(generated, base) -> None:
    by_id = {r.id: r for r in base.records}
    records = list(iter_records(generated))
    assert len(records) == 60 and len({r.id for r in records}) == 60
    assert len({r.group for r in records}) < 60  # papers with several structures
    partners = scale_generate.swap_partners()
    for record in records:
        source = by_id[record.meta["base"]]
        shape = np.array(record.meta["supercell"])
        assert record.num_sites == source.num_sites * shape.prod()
        assert record.num_sites <= OPTIONS.max_sites
        strain = np.linalg.solve(np.asarray(source.lattice) * shape[:, None], record.lattice)
        assert np.abs(strain - np.eye(3)).max() <= OPTIONS.strain + 1e-6
        assert np.allclose(strain, strain.T, atol=1e-5)
        for element, swapped in record.meta["swaps"].items():
            assert swapped in partners[element]
        elements = {str(e) for e in source.composition.elements}
        expected = {record.meta["swaps"].get(e, e) for e in elements}
        assert {str(e) for e in record.composition.elements} == expected
        assert record.title and set(record.title.split()) <= set(base.words)  # real words
    assert any(r.meta["supercell"] != [1, 1, 1] for r in records)
    assert any(r.meta["swaps"] for r in records)
    assert len({r.title for r in records} & {r.title for r in base.records}) < len(records)


def test_sizes_follow_a_cod_like_distribution_with_a_tail(base) -> None:
    lines = scale_generate.chunk_lines(base, scale_generate.ScaleOptions(seed=0), None, 0, 1500)
    sites = np.array([len(CrystalRecord.from_json(line).species) for line in lines])
    assert 50 <= np.median(sites) <= 120
    assert 0.10 <= (sites > 200).mean() <= 0.30  # COD: 19% of entries above 200 sites
    assert (sites > 500).sum() >= 15 and sites.max() <= 1000


def test_ingestion_reads_the_cifs_back_to_the_records(generated) -> None:
    options = IngestOptions(max_atoms=1000, time_limit=0)
    for record in list(iter_records(generated))[:12]:
        path = str(generated.parent / record.source)
        read = job_to_record(Job(record.id, path, path=path), options)
        assert isinstance(read, CrystalRecord), read
        assert read.title == record.title and read.group == record.group
        assert read.num_sites == record.num_sites
        assert read.composition.almost_equals(record.composition)
        lengths_angles = [Lattice(r.lattice).parameters for r in (read, record)]
        np.testing.assert_allclose(*lengths_angles, atol=1e-4)  # a CIF keeps no orientation
