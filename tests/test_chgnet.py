"""Frozen CHGNet crystal features on real default records: shape, determinism, the ordered
approximation of disorder, the cached store and the error when chgnet is missing."""

from __future__ import annotations

import importlib.util
import itertools
import pickle
import sys

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from clasp_pl.data import chgnet_features
from clasp_pl.data.chgnet_features import (
    CHGNET_DIM,
    ChgnetFeatures,
    ChgnetMissing,
    build_chgnet_feature_store,
    ordered_approximation,
)
from clasp_pl.data.featurize import valid_rows
from clasp_pl.data.records import CrystalRecord, iter_records, write_records
from helpers.data import DEFAULT_RECORDS

needs_chgnet = pytest.mark.skipif(
    importlib.util.find_spec("chgnet") is None,
    reason="the optional extra clasp_pl[chgnet] is not installed",
)


@pytest.fixture(scope="module")
def records() -> list[CrystalRecord]:
    """Four small ordered default records and two disordered ones."""
    small = [r for r in itertools.islice(iter_records(DEFAULT_RECORDS), 400) if r.num_sites <= 24]
    ordered = [r for r in small if not r.occupancies][:4]
    disordered = [r for r in small if r.occupancies and not r.is_ordered][:2]
    assert len(ordered) == 4 and len(disordered) == 2
    return ordered + disordered


@pytest.fixture(scope="module")
def features() -> ChgnetFeatures:
    return ChgnetFeatures(batch_size=4)


@needs_chgnet
@pytest.mark.slow  # loads CHGNet and runs it on real structures
def test_features_are_64d_deterministic_and_batch_independent(records, features):
    structures = [r.to_ordered_structure() for r in records]
    threads = torch.get_num_threads()
    first, failures = features(structures)
    assert torch.get_num_threads() == threads  # its one thread is set only while computing
    again, _ = features(structures)
    one_by_one = np.concatenate([features([s])[0] for s in structures])

    assert failures == {}
    assert first.shape == (len(records), CHGNET_DIM) and first.dtype == np.float32
    assert np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    np.testing.assert_allclose(first, one_by_one, atol=1e-5)
    # different structures, different features
    assert np.linalg.matrix_rank(first.astype(np.float64)) == len(records)


@needs_chgnet
@pytest.mark.slow  # loads CHGNet and runs it on real structures
def test_store_caches_one_row_per_record_and_reuses_it(tmp_path, records, features, monkeypatch):
    path = tmp_path / "records.jsonl.gz"
    write_records(records, path)
    store, rejects = build_chgnet_feature_store(path, tmp_path / "chgnet", batch_size=4)

    stored = np.concatenate([store[i]["features"] for i in range(len(store))])
    expected, _ = features([r.to_ordered_structure() for r in records])
    assert rejects == [] and len(store) == len(records)
    np.testing.assert_allclose(stored, expected, atol=1e-5)  # disordered: ordered approximation
    assert valid_rows(store).tolist() == [True] * len(records)
    manifest = store.manifest
    assert manifest["key"]["structure"] == "ordered-dominant"
    assert {"chgnet_version", "chgnet_model", "weights"} <= set(manifest["key"])

    def no_recompute(self, structures):
        raise AssertionError("a finished store must be reused, not recomputed")

    monkeypatch.setattr(ChgnetFeatures, "__call__", no_recompute)
    reused, rejects = build_chgnet_feature_store(path, tmp_path / "chgnet", batch_size=4)
    assert rejects == []
    np.testing.assert_array_equal(reused[len(records) - 1]["features"], stored[-1:])


@needs_chgnet
@pytest.mark.slow  # loads CHGNet and runs it on real structures
def test_isolated_atom_is_a_reject_with_a_nan_row(tmp_path, records):
    """An atom with no neighbour within CHGNet's 6 Å cutoff has no graph: that record is
    rejected (NaN row), the others are computed."""
    lone = CrystalRecord(
        id="lone-au",
        lattice=[[12.0, 0, 0], [0, 12.0, 0], [0, 0, 12.0]],
        species=["Au"],
        frac_coords=[[0.0, 0.0, 0.0]],
        title="an isolated gold atom",
        source="test",
    )
    path = tmp_path / "records.jsonl.gz"
    write_records([records[0], lone], path)
    store, rejects = build_chgnet_feature_store(path, tmp_path / "chgnet")
    assert [(r.id, r.reason) for r in rejects] == [("lone-au", "featurization_failed")]
    assert np.isfinite(store[0]["features"]).all()
    assert np.isnan(store[1]["features"]).all()
    assert valid_rows(store).tolist() == [True, False]


def test_ordered_approximation_of_a_structure_is_the_record_s(records):
    """A disordered pymatgen structure (what ``clasp embed`` reads) gets the stand-in its record
    gets: every site its dominant element, so embedding it gives the cached feature."""
    for record in records:
        approximation = ordered_approximation(record.to_structure())
        assert approximation.is_ordered
        assert approximation == record.to_ordered_structure()


@needs_chgnet
def test_features_pickle_without_the_loaded_model(features):
    """Store workers get the settings, not the model (each loads its own)."""
    features.model  # noqa: B018 - loaded
    copy = pickle.loads(pickle.dumps(features))
    assert "model" not in vars(copy)
    assert (copy.model_name, copy.batch_size, copy.threads) == ("0.3.0", 4, 1)


def test_missing_chgnet_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "chgnet.model", None)  # import fails as when not installed
    with pytest.raises(ChgnetMissing, match=r"pip install clasp_pl\[chgnet\]"):
        chgnet_features.load_chgnet()


def curium_dioxide() -> Structure:
    """CmO2 (fluorite, a = 5.36 Å): Cm (Z = 96) is beyond CHGNet's elements."""
    coords = [[0, 0, 0], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]]
    return Structure(Lattice.cubic(5.36), ["Cm", "O", "O"], coords)


@needs_chgnet
def test_element_beyond_plutonium_is_a_failure_and_the_batch_goes_on(records, features):
    """A structure whose graph CHGNet builds but whose element has no slot in its model (Cm)
    fails alone; the structures batched with it are computed as when alone."""
    ordered = records[0].to_ordered_structure()
    computed, failures = features([ordered, curium_dioxide(), ordered])
    assert list(failures) == [1] and "Z=96" in failures[1]
    assert np.isnan(computed[1]).all() and np.isfinite(computed[[0, 2]]).all()
    alone, _ = features([ordered])
    np.testing.assert_allclose(computed[[0, 2]], np.repeat(alone, 2, axis=0), atol=1e-5)


@needs_chgnet
def test_a_failing_forward_pass_is_rerun_one_structure_at_a_time(records, features, monkeypatch):
    """Without the element check, CHGNet's own forward pass fails on the whole batch: it is then
    rerun structure by structure, and only the failing one is lost."""
    monkeypatch.setattr(chgnet_features, "CHGNET_MAX_Z", 100)
    ordered = records[0].to_ordered_structure()
    computed, failures = features([ordered, curium_dioxide(), ordered])
    assert list(failures) == [1] and failures[1].startswith("RuntimeError")
    assert np.isfinite(computed[[0, 2]]).all() and np.isnan(computed[1]).all()
