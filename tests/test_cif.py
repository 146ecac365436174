"""Reading and validating single CIFs (gemmi and pymatgen readers, disorder policy, rejects)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from clasp_pl.data.cif import (
    CifError,
    ParsedCif,
    clean_text,
    element_symbol,
    parse_cif,
    read_cif,
)
from clasp_pl.data.records import read_records
from clasp_pl.data.rejects import Reject
from helpers.data import COD_SAMPLE, REPO

DEFAULT_DATA = REPO / "data" / "amcsd_default.jsonl.gz"
COD_FILES = sorted(COD_SAMPLE.glob("*.cif"))

needs_cod = pytest.mark.skipif(not COD_FILES, reason="COD sample CIFs not available")


def _mixed_site_cif(fe: float, mg: float, extra: str = "") -> str:
    """A P-1 cell with a mixed Fe/Mg site, an O on a general position and one on -1 (0,0,0)."""
    return f"""data_mixed
_publ_section_title
;
  'A mixed site
   in olivine'
;
_journal_paper_doi 10.1000/xyz
_journal_year 2001
_cell_length_a 5.0
_cell_length_b 6.0
_cell_length_c 7.0
_cell_angle_alpha 90
_cell_angle_beta 95
_cell_angle_gamma 90
loop_
_symmetry_equiv_pos_as_xyz
x,y,z
-x,-y,-z
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
_atom_site_occupancy
Fe1 Fe2+ 0.1 0.2 0.3 {fe}
Mg1 Mg2+ 0.1 0.2 0.3 {mg}
O1 O2- 0.3 0.1 0.4 1.0
O2 O2- 0 0 0 1.0
{extra}"""


def _composition(parsed: ParsedCif) -> tuple[str, int]:
    return parsed.structure.composition.reduced_formula, len(parsed.structure)


@needs_cod
@pytest.mark.parametrize("reader", ["gemmi", "pymatgen"])
def test_cod_samples_parse_with_text(reader: str) -> None:
    for path in COD_FILES:
        parsed = read_cif(path, reader=reader)
        assert isinstance(parsed, ParsedCif), parsed
        assert len(parsed.structure) > 0 and parsed.encoding == "utf-8"
        assert parsed.text.title and parsed.text.title == parsed.text.title.strip()
        assert "\n" not in parsed.text.title
        assert parsed.text.year and 1900 < parsed.text.year < 2100
    nacl = read_cif(COD_SAMPLE / "1000041.cif")
    assert _composition(nacl) == ("NaCl", 8)  # Fm-3m special positions counted once
    assert nacl.text.doi == "10.1107/S0365110X65002244"


def _default_structures(count: int) -> list[Structure]:
    records = read_records(DEFAULT_DATA)
    step = max(1, len(records) // count)
    return [record.to_structure() for record in records[::step][:count]]


@needs_cod
def test_gemmi_agrees_with_pymatgen() -> None:
    texts = [(path.name, path.read_text(encoding="utf-8")) for path in COD_FILES]
    if DEFAULT_DATA.exists():
        for number, structure in enumerate(_default_structures(200)):
            texts.append((f"default-{number}", str(CifWriter(structure))))
    timings = {}
    results = {}
    for reader in ("gemmi", "pymatgen"):
        start = time.perf_counter()
        results[reader] = [
            _composition(parse_cif(text, name, reader=reader)) for name, text in texts
        ]
        timings[reader] = len(texts) / (time.perf_counter() - start)
    mismatches = [
        (name, gemmi, pmg)
        for (name, _), gemmi, pmg in zip(texts, results["gemmi"], results["pymatgen"], strict=True)
        if gemmi != pmg
    ]
    assert not mismatches, mismatches
    print(
        f"\n{len(texts)} CIFs agree; CIFs/s: "
        + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
    )


@pytest.mark.parametrize("reader", ["gemmi", "pymatgen"])
def test_mixed_site_kept_by_default_majority_and_skip(reader: str) -> None:
    parsed = parse_cif(_mixed_site_cif(0.6, 0.4), "mixed.cif", reader=reader)
    # Fe/Mg site ×2 (general position), O1 ×2, O2 ×1 (on the inversion centre)
    assert parsed.composition == pytest.approx({"Fe": 1.2, "Mg": 0.8, "O": 3.0})
    assert parsed.sites.species.count("Fe") == 2  # the dominant element labels the site
    assert parsed.sites.occupancies.count({"Fe": 0.6, "Mg": 0.4}) == 2
    assert parsed.n_disordered == 2
    assert parsed.text.title == "A mixed site in olivine"
    assert parsed.text.doi == "10.1000/xyz"
    majority = parse_cif(
        _mixed_site_cif(0.6, 0.4), "mixed.cif", reader=reader, occupancy="majority"
    )
    assert sorted(majority.structure.composition.as_dict().items()) == [("Fe", 2.0), ("O", 3.0)]
    assert majority.n_disordered == 2 and majority.structure.is_ordered
    with pytest.raises(CifError) as err:
        parse_cif(_mixed_site_cif(0.6, 0.4), "mixed.cif", reader=reader, occupancy="skip")
    assert err.value.reason == "partial_occupancy" and "mixed.cif" in err.value.message


def test_vacancy_majority_site_kept_partial_or_dropped_by_majority() -> None:
    parsed = parse_cif(_mixed_site_cif(0.2, 0.1), "vacant.cif")
    assert parsed.composition == pytest.approx({"Fe": 0.4, "Mg": 0.2, "O": 3.0})
    assert parsed.n_dropped == 0 and not parsed.structure.is_ordered
    majority = parse_cif(_mixed_site_cif(0.2, 0.1), "vacant.cif", occupancy="majority")
    assert majority.structure.composition.reduced_formula == "O2"
    assert majority.n_dropped == 2


def test_split_positions_merge_into_one_site() -> None:
    split = "Li1 Li+ 0.25 0.25 0.25 0.5\nLi2 Li+ 0.26 0.25 0.25 0.5"
    parsed = parse_cif(_mixed_site_cif(1.0, 0.0, split), "split.cif", occupancy="skip")
    assert parsed.structure.composition["Li"] == 2  # two half Li 0.05 Å apart, and the inverse


def test_deuterium_and_charges() -> None:
    assert element_symbol("Fe3+") == "Fe"
    assert element_symbol("O2-") == "O"
    assert element_symbol("D") == "H"
    assert element_symbol("Cl1") == "Cl"
    with pytest.raises(CifError):
        element_symbol("?")
    deuterated = _mixed_site_cif(1.0, 0.0, "D1 D 0.4 0.4 0.1 1.0")
    assert parse_cif(deuterated, "d.cif").structure.composition["H"] == 2


def test_clean_text() -> None:
    assert clean_text("  'Title\n  continued'  ") == "Title continued"
    assert clean_text("?") == ""
    assert clean_text(None) == ""


# --- real malformed files -------------------------------------------------------------------


@pytest.fixture
def brookite() -> bytes:
    return (COD_SAMPLE / "7206075.cif").read_bytes()


def _reject(path: Path, **kwargs) -> Reject:
    result = read_cif(path, **kwargs)
    assert isinstance(result, Reject), result
    assert str(path) in result.message and result.id == path.stem
    return result


@needs_cod
def test_truncated_cif(tmp_path: Path, brookite: bytes) -> None:
    path = tmp_path / "trunc.cif"
    path.write_bytes(brookite[: len(brookite) // 2])
    assert _reject(path).reason == "unparseable"


@needs_cod
def test_not_utf8_is_decoded_with_a_fallback(tmp_path: Path, brookite: bytes) -> None:
    path = tmp_path / "latin.cif"
    path.write_bytes(brookite.replace(b"brookite", "brookit\u00e9".encode("latin-1"), 1))
    parsed = read_cif(path)
    assert isinstance(parsed, ParsedCif) and parsed.encoding == "cp1252"
    assert "brookité in mechanical activation" in parsed.text.title


@needs_cod
def test_half_occupancy_under_skip(tmp_path: Path, brookite: bytes) -> None:
    path = tmp_path / "half.cif"
    path.write_bytes(brookite.replace(b"0. 0. 0. 1. 0 d", b"0. 0. 0. 0.5 0 d"))
    assert _reject(path, occupancy="skip").reason == "partial_occupancy"
    # kept with its half-empty Ti site, unless the formula TiO2 is checked: Ti0.5O2 is not it
    assert _reject(path).reason == "formula_mismatch"
    parsed = read_cif(path, check_stated_formula=False)
    assert isinstance(parsed, ParsedCif)
    assert parsed.composition["Ti"] == pytest.approx(0.5 * parsed.composition["O"] / 2)


@needs_cod
def test_nan_coordinate(tmp_path: Path, brookite: bytes) -> None:
    path = tmp_path / "nan.cif"
    path.write_bytes(brookite.replace(b"0. 0. 0.21017", b"0. nan 0.21017"))
    assert _reject(path).reason == "non_finite"


@needs_cod
@pytest.mark.parametrize("reader", ["gemmi", "pymatgen"])
def test_no_atom_loop(tmp_path: Path, brookite: bytes, reader: str) -> None:
    path = tmp_path / "empty.cif"
    path.write_bytes(brookite[: brookite.index(b"loop_\n_atom_site_label")])
    assert _reject(path, reader=reader).reason == "no_sites"


def test_missing_file(tmp_path: Path) -> None:
    assert _reject(tmp_path / "absent.cif").reason == "unreadable"


def test_supercell_primitive_and_too_many_atoms(tmp_path: Path) -> None:
    rocksalt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0] * 3, [0.5] * 3]
    )
    supercell = rocksalt * (3, 3, 3)  # 216 sites, reducible to the 2-site primitive cell
    path = tmp_path / "super.cif"
    CifWriter(supercell).write_file(path)
    parsed = read_cif(path)
    assert isinstance(parsed, ParsedCif) and parsed.primitive and len(parsed.structure) == 2
    supercell.replace(0, "K")  # one substituted atom breaks the lattice translations
    CifWriter(supercell).write_file(path)
    assert _reject(path).reason == "too_many_atoms"
    assert isinstance(read_cif(path, max_atoms=300), ParsedCif)


def test_bad_reader_and_policy_are_programming_errors() -> None:
    text = _mixed_site_cif(1.0, 0.0)
    with pytest.raises(ValueError):
        parse_cif(text, "x.cif", reader="ase")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        parse_cif(text, "x.cif", occupancy="random")  # type: ignore[arg-type]


def test_coordinates_are_wrapped() -> None:
    parsed = parse_cif(_mixed_site_cif(1.0, 0.0), "wrap.cif")
    frac = parsed.structure.frac_coords
    assert np.all((frac >= 0) & (frac < 1))
