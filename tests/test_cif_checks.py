"""What the reader reads and what it refuses, on crafted variants of real CIFs.

Symmetry in every spelling, dummy atoms, text encodings, impossible cells and occupancies, the
stated formula, and the bounds on size, time and memory.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import gemmi
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from clasp_pl.data.cif import ParsedCif, parse_cif, read_cif
from clasp_pl.data.cif_symmetry import find_space_group
from clasp_pl.data.ingest import IngestOptions, Job, job_to_record
from clasp_pl.data.limits import TimeLimitExceeded, time_limit
from clasp_pl.data.rejects import CifError, Reject
from helpers.data import COD_SAMPLE, SHARED_DATA, shared_path

P21N = SHARED_DATA / "cif_edge_cases" / "pymatgen__Cod_2100513.cif"  # COD 2100513, P 1 21/n 1
NACL = COD_SAMPLE / "1000041.cif"  # COD 1000041, Fm-3m
SYMMETRY_TAGS = (
    "_symmetry_space_group_name_H-M",
    "_symmetry_space_group_name_Hall",
    "_space_group_IT_number",
    "_symmetry_Int_Tables_number",
)


def edit(path: Path, change: Callable[[gemmi.cif.Block], None]) -> str:
    """The CIF text of ``path`` after ``change`` edited its (only) block."""
    document = gemmi.cif.read_file(str(shared_path(path)))
    change(document.sole_block())
    return document.as_string()


def without_symmetry(block: gemmi.cif.Block) -> None:
    for tag in SYMMETRY_TAGS:
        item = block.find_pair_item(tag)
        if item is not None:
            item.erase()
    block.find_loop_item("_symmetry_equiv_pos_as_xyz").erase()


def with_pairs(**pairs: str) -> Callable[[gemmi.cif.Block], None]:
    def change(block: gemmi.cif.Block) -> None:
        without_symmetry(block)
        for tag, value in pairs.items():
            block.set_pair(tag, gemmi.cif.quote(value))

    return change


def add_sites(*rows: dict[str, str]) -> Callable[[gemmi.cif.Block], None]:
    """Append atom-site rows: a copy of the first row with the given columns replaced."""

    def change(block: gemmi.cif.Block) -> None:
        loop = block.find_loop("_atom_site_fract_x").get_loop()
        first = loop.values[: loop.width()]
        for row in rows:
            values = list(first)
            for tag, value in row.items():
                values[loop.tags.index("_atom_site_" + tag)] = value
            loop.add_row(values)

    return change


def set_values(**values: str) -> Callable[[gemmi.cif.Block], None]:
    def change(block: gemmi.cif.Block) -> None:
        for tag, value in values.items():
            block.set_pair("_" + tag, value)

    return change


def parsed(text: str, **kwargs) -> ParsedCif:
    return parse_cif(text, "variant.cif", max_atoms=1000, **kwargs)


def rejected(text: str, **kwargs) -> CifError:
    with pytest.raises(CifError) as err:
        parse_cif(text, "variant.cif", max_atoms=1000, **kwargs)
    assert "variant.cif" in err.value.message
    return err.value


# --- symmetry -----------------------------------------------------------------------------------


def test_symmetry_in_every_spelling_gives_one_structure() -> None:
    reference = read_cif(shared_path(P21N))
    assert reference.composition == pytest.approx({"Ca": 4, "Al": 2, "Nb": 2, "O": 12})

    renamed = shared_path(P21N).read_text().replace("_symmetry_equiv_pos", "_space_group_symop")
    assert "_space_group_symop_as_xyz" in renamed and "_symmetry_equiv" not in renamed
    renamed = renamed.replace("_space_group_symop_as_xyz", "_space_group_symop_operation_xyz")
    variants = {
        "symop tag": renamed,
        "P2(1)/n": edit(P21N, with_pairs(_symmetry_space_group_name_H_M="P2(1)/n")),
        "P 21/n": edit(P21N, with_pairs(_space_group_name_H_M_alt="P 21/n")),
        "P21/n": edit(P21N, with_pairs(_symmetry_space_group_name_H_M="P21/n")),
        "p 1 21/n 1": edit(P21N, with_pairs(_symmetry_space_group_name_H_M="p 1 21/n 1")),
        "Hall": edit(P21N, with_pairs(_symmetry_space_group_name_Hall="-P 2yn")),
    }
    for name, text in variants.items():
        text = text.replace("H_M", "H-M")  # keyword arguments cannot spell the hyphen
        result = parse_cif(text, name)
        assert result.composition == pytest.approx(reference.composition), name
        assert result.sites.frac == pytest.approx(reference.sites.frac, abs=1e-6), name
        assert not result.assumed_p1


def test_it_number_and_no_symmetry_at_all() -> None:
    brookite = COD_SAMPLE / "7206075.cif"  # I 41/a m d, origin choice 1 (the standard one)
    reference = read_cif(shared_path(brookite))
    by_number = parsed(edit(brookite, with_pairs(_symmetry_Int_Tables_number="141")))
    assert by_number.composition == pytest.approx(reference.composition)
    listed_only = parsed(edit(brookite, with_pairs()), check_stated_formula=False)
    assert listed_only.assumed_p1 and len(listed_only.sites.species) == 2  # Ti1 and O1


def test_space_group_symbols() -> None:
    cubic, rhombohedral = (5.0, 5.0, 5.0, 90.0, 90.0, 90.0), (5.0, 5.0, 5.0, 60.0, 60.0, 60.0)
    for spelling in ("P2(1)/c", "P 21/c", "P21/c", "p 1 21/c 1", "P 1 21/c 1"):
        assert find_space_group(spelling, cubic).xhm() == "P 1 21/c 1", spelling
    assert find_space_group("C2:b1", cubic).xhm() == "C 1 2 1"
    assert find_space_group("Pna2(1)", cubic).xhm() == "P n a 21"
    assert find_space_group("R -3 m", cubic).xhm() == "R -3 m:H"
    assert find_space_group("R -3 m", rhombohedral).xhm() == "R -3 m:R"
    assert find_space_group("R -3 m:H", rhombohedral).xhm() == "R -3 m:H"
    assert find_space_group("not a group", cubic) is None
    assert find_space_group("?", cubic) is None


def test_unreadable_operation_is_rejected() -> None:
    def garble(block: gemmi.cif.Block) -> None:
        block.find_values("_symmetry_equiv_pos_as_xyz")[1] = "'x,y'"

    error = rejected(edit(NACL, garble))
    assert error.reason == "unparseable" and "'x,y'" in error.message


# --- dummy atoms and encodings --------------------------------------------------------------------


def test_dummy_atoms_and_centroids_are_dropped_and_counted() -> None:
    reference = read_cif(shared_path(NACL))
    text = edit(
        NACL,
        add_sites(
            {"label": "Cg1", "type_symbol": ".", "fract_x": "0.25"},  # ring centroid
            {"label": "Cp1", "type_symbol": "?", "fract_x": "0.3"},
            {"label": "X1", "type_symbol": "X", "fract_x": "0.35"},
            {"label": "Q1", "type_symbol": "Q", "fract_x": "0.15"},  # a residual-density peak
            {"label": "C9", "type_symbol": "C", "fract_x": "0.2", "calc_flag": "dum"},
        ),
    )
    result = parsed(text)  # the formula check passes: no centroid was read as carbon
    assert result.n_dummy_sites == 5
    assert result.composition == pytest.approx(reference.composition)
    record = job_to_record(Job("nacl", "nacl.cif", cif=text), IngestOptions(require_text=False))
    assert record.meta["n_dummy_sites"] == 5


def test_cp1252_and_latin1_bytes_are_decoded(tmp_path: Path) -> None:
    data = shared_path(P21N).read_bytes()
    cp1252 = tmp_path / "cp1252.cif"
    cp1252.write_bytes(data.replace(b"'Barnes, Paris W.'", b"'O\x92Neill, Paris W.'"))
    result = read_cif(cp1252)
    assert isinstance(result, ParsedCif) and result.encoding == "cp1252"
    record = job_to_record(Job("x", str(cp1252), path=str(cp1252)), IngestOptions())
    assert record.meta["text_encoding"] == "cp1252"
    latin1 = tmp_path / "latin1.cif"  # 0x81 is undefined in cp1252
    latin1.write_bytes(data.replace(b"'Barnes, Paris W.'", b"'Barnes\x81, Paris W.'"))
    assert read_cif(latin1).encoding == "latin-1"


# --- impossible cells and occupancies -------------------------------------------------------------


def test_impossible_cell_parameters() -> None:
    for values in (
        {"cell_length_a": "-5.62"},
        {"cell_length_b": "0"},
        {"cell_angle_beta": "180"},
        {"cell_angle_alpha": "0"},
        {"cell_angle_alpha": "10", "cell_angle_beta": "10", "cell_angle_gamma": "170"},
    ):
        error = rejected(edit(NACL, set_values(**values)))
        assert error.reason == "unphysical_cell", values
    assert rejected(edit(NACL, set_values(cell_length_c="?"))).reason == "non_finite"


def test_too_little_volume_per_atom() -> None:
    silicon = SHARED_DATA / "cif_edge_cases" / "pymatgen__Si.cif"  # 2 atoms, P1
    tiny = edit(silicon, set_values(cell_length_a="0.5", cell_length_b="0.5", cell_length_c="0.5"))
    error = rejected(tiny)
    assert error.reason == "unphysical_cell" and "per atom" in error.message


def test_close_atoms_need_shared_occupancy() -> None:
    # a second full Na 0.3 Å from Na1: both cannot be there
    overlap = edit(NACL, add_sites({"label": "Na2", "fract_x": "0.0534"}))
    error = rejected(overlap)
    assert error.reason == "unphysical_cell" and "0.30 Å apart" in error.message
    # one Cl disordered over six positions 0.3 Å off the centre (Fm-3m makes six images of
    # (0.5534, 1/2, 1/2)), one sixth each: one site
    no_cl1 = "Cl1 Cl1- 4 b 0.5 0.5 0.5 1. 0 d\n"
    split_cl = {"label": "Cl2", "type_symbol": "Cl1-", "fract_x": "0.5534", "fract_y": "0.5",
                "fract_z": "0.5", "occupancy": "0.166667"}  # fmt: skip
    split = edit(NACL, add_sites(split_cl))
    assert no_cl1 in split
    result = parsed(split.replace(no_cl1, ""))
    assert result.composition == pytest.approx({"Na": 4, "Cl": 4}, rel=1e-5)
    assert len(result.sites.species) == 8 and result.sites.occupancies == []
    # half a Cl at the centre and half at each of the six (no two closer than 0.5 Å hold more
    # than one atom): kept as the file states it, seven sites, and the formula check refuses it
    crowded = split.replace(no_cl1, no_cl1.replace(" 1. 0 d", " 0.5 0 d")).replace(
        "0.166667", "0.5"
    )
    assert parsed(crowded, check_stated_formula=False).composition == pytest.approx(
        {"Na": 4, "Cl": 14}
    )
    assert rejected(crowded).reason == "formula_mismatch"


def test_over_occupied_sites() -> None:
    too_much = edit(NACL, lambda b: None).replace(
        "Na1 Na1+ 4 a 0. 0. 0. 1.", "Na1 Na1+ 4 a 0. 0. 0. 1.7"
    )
    error = rejected(too_much)
    assert error.reason == "bad_occupancy" and "1.7" in error.message
    k_site = {"label": "K1", "type_symbol": "K1+", "occupancy": "0.3"}
    error = rejected(edit(NACL, add_sites(k_site)), check_stated_formula=False)
    assert error.reason == "bad_occupancy" and "sum to 1.300" in error.message
    rounding = edit(NACL, add_sites({**k_site, "occupancy": "0.03"}))  # sums to 1.03: rounding
    result = parsed(rounding, check_stated_formula=False)
    assert sum(result.sites.occupancies[0].values()) == pytest.approx(1.0)
    assert result.sites.occupancies[0] == pytest.approx({"Na": 1 / 1.03, "K": 0.03 / 1.03})


def test_a_site_listed_twice_is_one_atom() -> None:
    twice = edit(NACL, add_sites({"label": "Na9"}))  # Na1 again under another label
    result = parsed(twice)
    assert result.composition == pytest.approx({"Na": 4, "Cl": 4})
    assert result.sites.n_repeated == 4  # one per image


# --- the stated formula ---------------------------------------------------------------------------


def test_stated_formula_is_checked() -> None:
    def formula(value: str) -> str:
        return edit(NACL, set_values(chemical_formula_sum=gemmi.cif.quote(value)))

    assert parsed(formula("Cl Na")).composition == pytest.approx({"Na": 4, "Cl": 4})
    error = rejected(formula("Cl K Na"))
    assert error.reason == "formula_mismatch" and "K missing" in error.message
    assert rejected(formula("Cl3 Na")).reason == "formula_mismatch"  # amounts off
    assert rejected(formula("Cl")).reason == "formula_mismatch"  # Na extra
    hydrate = parsed(formula("Cl Na H2"))  # no H site: hydrogen is exempt, and noted
    assert hydrate.hydrogen_not_located
    assert not parsed(formula("?")).hydrogen_not_located  # unreadable formula: not checked
    assert parsed(formula("Cl K Na"), check_stated_formula=False)


# --- bounds on size, time and memory --------------------------------------------------------------


def supercell_cif(tmp_path: Path) -> Path:
    """A real 10,648-atom supercell (NaCl 11 × 11 × 11) written by pymatgen's CifWriter."""
    rocksalt = Structure.from_spacegroup(
        "Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]
    )
    path = tmp_path / "supercell.cif"
    CifWriter(rocksalt * (11, 11, 11)).write_file(path)
    return path


def test_huge_cell_is_rejected_fast_and_small(tmp_path: Path) -> None:
    path = supercell_cif(tmp_path)
    for reader in ("gemmi", "pymatgen"):
        tracemalloc.start()
        start = time.perf_counter()
        result = read_cif(path, reader=reader)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert isinstance(result, Reject) and result.reason == "too_many_atoms", result
        assert "10648 listed sites > max_cell_atoms=1000" in result.message
        assert seconds < 1.0 and peak < 300 * 2**20, (reader, seconds, peak / 2**20)
    # resident memory, C++ allocations included, in a fresh process: peak minus the resident
    # size after the imports (an upper bound of what reading the file added)
    script = textwrap.dedent(
        f"""
        from clasp_pl.data.cif import read_cif
        def status(key):
            with open("/proc/self/status") as lines:
                return next(int(line.split()[1]) for line in lines if line.startswith(key))
        before = status("VmRSS:")
        result = read_cif({str(path)!r})
        print(result.reason, (status("VmHWM:") - before) / 1024)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    reason, megabytes = done.stdout.split()
    assert reason == "too_many_atoms" and float(megabytes) < 300, done.stdout


def test_cell_cap_counts_special_positions_once(tmp_path: Path) -> None:
    # Fm-3m has 192 operations; Na on 4a and Cl on 4b are 8 atoms, not 384
    assert len(read_cif(shared_path(NACL), max_atoms=8, max_cell_atoms=8).sites.species) == 8
    result = read_cif(shared_path(NACL), max_atoms=8, max_cell_atoms=7)
    assert (
        result.reason == "too_many_atoms" and "8 atoms in the conventional cell" in result.message
    )


def test_slow_file_times_out(tmp_path: Path) -> None:
    # the 10,648-atom cell allowed through the size caps, read by pymatgen's (Python) parser:
    # that takes minutes; the limit stops it
    path = supercell_cif(tmp_path)
    options = IngestOptions(
        reader="pymatgen", max_atoms=20000, max_cell_atoms=20000, time_limit=0.5
    )
    start = time.perf_counter()
    result = job_to_record(Job("super", str(path), path=str(path)), options)
    assert isinstance(result, Reject) and result.reason == "timeout", result
    assert "0.5 s" in result.message and time.perf_counter() - start < 5


def test_time_limit_restores_an_outer_limit() -> None:
    with pytest.raises(TimeLimitExceeded):
        with time_limit(0.5):
            with time_limit(5):
                pass  # the inner limit ends; the outer one still fires
            while True:
                time.sleep(0.01)
    with time_limit(0):  # disabled
        time.sleep(0.01)


def test_memory_limit_turns_into_a_reject() -> None:
    """In a real child process: a limited address space, then a CIF too large to parse."""
    script = textwrap.dedent(
        """
        from clasp_pl.data.ingest import IngestOptions, Job, job_to_record
        from clasp_pl.data.limits import limit_address_space
        rows = "".join(f"C{i} C 0.{i:07d} 0.5 0.5\\n" for i in range(3_000_000))
        cif = ("data_big\\n_cell_length_a 9\\n_cell_length_b 9\\n_cell_length_c 9\\n"
               "_cell_angle_alpha 90\\n_cell_angle_beta 90\\n_cell_angle_gamma 90\\n"
               "loop_\\n_atom_site_label\\n_atom_site_type_symbol\\n_atom_site_fract_x\\n"
               "_atom_site_fract_y\\n_atom_site_fract_z\\n" + rows)
        assert limit_address_space(150 * 2**20)  # 150 MiB more than now
        result = job_to_record(Job("big", "big.cif", cif=cif), IngestOptions())
        print(result.reason)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["out_of_memory"]


def test_worker_memory_limit_spares_the_main_process() -> None:
    options = IngestOptions(require_text=False, worker_memory_gb=0.5)
    assert isinstance(job_to_record(Job("nacl", str(NACL), path=str(NACL)), options), object)
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY
