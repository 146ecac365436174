"""The 47 real reader test inputs of gemmi, diffpy.structure and pymatgen, through both readers.

``../shared/data/cif_edge_cases/SOURCES.md`` says for each file whether pymatgen itself
(``Structure.from_file``) parses it, and to which formula. Every file pymatgen parses must be read
by the default reader to the same composition, and by the pymatgen reader too, unless it is in
:data:`DIFFERENT_BY_DESIGN` with the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pymatgen.core import Composition

from clasp_pl.data.cif import ParsedCif, read_cif
from clasp_pl.data.rejects import Reject
from helpers.data import SHARED_DATA

CORPUS = SHARED_DATA / "cif_edge_cases"
FILES = sorted(CORPUS.glob("*.cif"))

# file -> (composition the default reader gives, why it is not pymatgen's)
DIFFERENT_BY_DESIGN = {
    "diffpy__badspacegroup.cif": (
        {"K": 2, "Mg": 2, "Al": 4, "Si": 8, "O": 24},
        "the only symmetry is the H-M symbol 'C2:b1' (C 1 2 1: unique axis b, cell choice 1). "
        "pymatgen does not read it and falls back to P1, keeping the 12 listed sites "
        "(KMgAl2Si2O6); the default reader applies C 1 2 1 and expands them to 40 atoms, "
        "K2Mg2Al4Si8O24, with the Si:O = 1:3 of the Si4O10(OH)2 layer of this montmorillonite",
    ),
}

# Compositions of the cell the issue names (what each file really describes).
TARGETS = {
    "diffpy__Ni_ref.cif": {"Ni": 4},  # _space_group_name_H-M_ref 'F m -3 m' (pymatgen: P1, Ni1)
    "diffpy__badspacegroup.cif": {"K": 2, "Mg": 2, "Al": 4, "Si": 8, "O": 24},
    "diffpy__LiCl-bad.cif": {"Li": 4, "Cl": 4},  # a quoted value over several lines, _eof
    "pymatgen__srycoo.cif": {"Sr": 11.2, "Y": 4.8, "Co": 16, "O": 42},
    "pymatgen__site_type_symbol_test.cif": {"Ge": 1.6, "Sb": 1.6, "Te": 4},  # one label, 2 types
    "gemmi__4003024.cif": {"Cs": 1, "Sn": 0.9, "In": 0.0672, "Cl": 3},
    "diffpy__MnO2.cif": {"Mn": 1.8568, "O": 5.7184},  # O2 at 0.4296 is not dropped
}


def pymatgen_verdicts() -> dict[str, str | None]:
    """File name -> pymatgen's reduced formula (None when pymatgen refuses the file)."""
    verdicts = {}
    for line in (CORPUS / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 9 and cells[1].endswith(".cif"):
            match = re.fullmatch(r"yes \(\d+, (.+)\)", cells[9])
            verdicts[cells[1]] = match.group(1) if match else None
    return verdicts


def same_composition(a: dict[str, float] | Composition, b: dict[str, float] | Composition) -> bool:
    """Equal element fractions (the number of formula units per cell aside)."""
    return Composition(a).fractional_composition.almost_equals(
        Composition(b).fractional_composition, rtol=1e-3, atol=1e-4
    )


@pytest.fixture(scope="module")
def verdicts() -> dict[str, str | None]:
    if not FILES:
        pytest.skip(f"{CORPUS} not available")
    return pymatgen_verdicts()


def test_sources_cover_every_file(verdicts) -> None:
    assert len(FILES) == 47 and {path.name for path in FILES} == set(verdicts)
    assert set(TARGETS) | set(DIFFERENT_BY_DESIGN) <= set(verdicts)


@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_both_readers_agree_with_pymatgen(path: Path, verdicts) -> None:
    default = read_cif(path, max_atoms=1000)
    second = read_cif(path, reader="pymatgen", max_atoms=1000)
    expected = verdicts[path.name]
    if expected is None:  # pymatgen refuses it; so do both readers, each with a reason
        assert isinstance(default, Reject) and isinstance(second, Reject), (default, second)
        assert default.reason in {"no_sites", "unphysical_cell", "unparseable"}, default
        return
    assert isinstance(default, ParsedCif), default
    assert isinstance(second, ParsedCif), second
    if path.name in DIFFERENT_BY_DESIGN:
        composition, _reason = DIFFERENT_BY_DESIGN[path.name]
        assert same_composition(default.composition, composition)
        assert not same_composition(default.composition, Composition(expected))
        assert same_composition(second.composition, Composition(expected))  # pymatgen's P1
        return
    assert same_composition(default.composition, Composition(expected)), default.composition
    assert same_composition(second.composition, default.composition), second.composition


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_targets_keep_their_real_composition(name: str, verdicts) -> None:
    parsed = read_cif(CORPUS / name, max_atoms=1000)
    assert isinstance(parsed, ParsedCif), parsed
    assert parsed.composition.keys() == TARGETS[name].keys()
    for element, amount in TARGETS[name].items():
        assert parsed.composition[element] == pytest.approx(amount, rel=1e-6), element


def test_how_the_targets_were_read(verdicts) -> None:
    licl = read_cif(CORPUS / "diffpy__LiCl-bad.cif")
    srycoo = read_cif(CORPUS / "pymatgen__srycoo.cif")
    assert licl.repaired_syntax and srycoo.repaired_syntax
    assert licl.text.title == "" and not licl.assumed_p1
    ni = read_cif(CORPUS / "diffpy__Ni_ref.cif")
    assert not ni.assumed_p1 and ni.structure.lattice.abc == pytest.approx((3.562,) * 3)
    mixed = read_cif(CORPUS / "gemmi__4003024.cif")
    assert mixed.sites.occupancies[mixed.sites.species.index("Sn")] == pytest.approx(
        {"Sn": 0.9, "In": 0.0672}
    )
    assert not read_cif(CORPUS / "pymatgen__Si.cif").sites.occupancies  # ordered: no dicts
