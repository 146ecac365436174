"""Tests for formula parsing, element mentions and lexical scores."""

from __future__ import annotations

import pytest
import torch
from pymatgen.core import Composition

from clasp_pl.search.lexical import (
    N_MATCHED_ELEMENTS,
    LexicalIndex,
    element_vector,
    explain,
    formula_key,
    lexical_scores,
    mentioned_elements,
    parse_formulas,
    reduced_formula,
)


def formulas(text: str) -> list[str]:
    return [c.reduced_formula for c in parse_formulas(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Crystal structure of KNb5O13", ["KNb5O13"]),
        ("K Nb5 O13 at high pressure", ["KNb5O13"]),
        ("Forsterite, Mg2 Si O4, At 10 GPa", ["Mg2SiO4"]),
        ("KNb~5~O~13~", ["KNb5O13"]),
        ("Fe<sub>2</sub>O<sub>3</sub>", ["Fe2O3"]),
        ("SrTiO$_3$ and BaTiO_{3}", ["SrTiO3", "BaTiO3"]),
        ("Fe₂O₃", ["Fe2O3"]),
        ("Ca(OH)2 (portlandite)", ["Ca(OH)2"]),
        ("(Mg,Fe)2SiO4 olivine", ["MgFeSiO4"]),
        ("2H-MoS2 and LiFePO4/C", ["MoS2", "LiFePO4"]),
        ("NaCl, HCl; CO2 and H2O.", ["NaCl", "HCl", "CO2", "H2O"]),
    ],
)
def test_parse_formulas(text: str, expected: list[str]) -> None:
    assert formulas(text) == [Composition(f).reduced_formula for f in expected]


@pytest.mark.parametrize("text", ["CuSO4·5H2O", "CuSO4.5H2O", "CuSO4 • 5H2O", "CuSO4*5H2O"])
def test_hydrates(text: str) -> None:
    (composition,) = parse_formulas(text)
    assert composition == Composition("CuSO4(H2O)5")


def test_variable_hydrate_drops_water_and_decimal_counts_stay() -> None:
    assert parse_formulas("CuSO4·xH2O") == [Composition("CuSO4")]
    assert parse_formulas("Li0.5CoO2") == [Composition("Li0.5CoO2")]


@pytest.mark.parametrize(
    "text",
    [
        "The crystal structure of a new mineral",
        "In As He No I At Be Ca",  # English look-alikes and lone symbols
        "Part II and IV; CO and NO",  # Roman numerals, all-caps acronyms
        "space group P21/c, C2/c, I41/amd, Pnma, P-1, Fm-3m, Pa-3, R3c",
        "Fe3+ and Mn<sup>2+</sup>",  # ions are not formulas
        "Li and Na",
    ],
)
def test_no_false_formulas(text: str) -> None:
    assert parse_formulas(text) == []


def test_plain_english_mentions_no_element() -> None:
    assert mentioned_elements("The crystal structure of a new mineral") == set()
    assert mentioned_elements("This will lead to new results in P-V space") == set()


def test_mentioned_elements_sources() -> None:
    assert mentioned_elements("Silicon and IRON in aluminium") == {"Si", "Fe", "Al"}
    assert mentioned_elements("lead oxides") == {"Pb", "O"}
    assert mentioned_elements("hydroxides and sulphates") == {"O", "H", "S"}
    assert mentioned_elements("the Fe-Ni system") == {"Fe", "Ni"}
    assert mentioned_elements("Fe3+ and O2- in Cu(II) sites") == {"Fe", "O", "Cu"}
    assert mentioned_elements("Mg2 Si O4") == {"Mg", "Si", "O"}


def test_element_vector_and_formula_key() -> None:
    vector = element_vector(["H", "Lr", "Og"])  # Og (Z=118) is out of range, ignored
    assert vector.shape == (N_MATCHED_ELEMENTS,) and vector.sum() == 2 and vector[0] and vector[102]
    assert formula_key(Composition("Fe2O3")) == formula_key(Composition("Fe4O6"))
    assert formula_key(Composition("Fe2O3")) != formula_key(Composition("Fe3O4"))


def test_lexical_scores_hand_made() -> None:
    targets = [Composition(f) for f in ["Fe2O3", "Fe3O4", "SiO2", "NaCl", "Fe4O6"]]
    queries = ["Fe2O3", "iron oxide", "a new mineral", "silicon and sodium"]
    scores = lexical_scores(queries, targets, element_weight=0.8)
    expected = torch.tensor(
        [
            [1.0, 0.8, 0.8 / 3, 0.0, 1.0],  # exact (Fe4O6 reduces to Fe2O3), same elements
            [0.8, 0.8, 0.8 / 3, 0.0, 0.8],  # names only: Jaccard({Fe, O}, ...)
            [0.0, 0.0, 0.0, 0.0, 0.0],  # no element named
            [0.0, 0.0, 0.8 / 3, 0.8 / 3, 0.0],  # {Si, Na} vs {Si, O}: 1/3
        ]
    )
    assert scores.shape == (4, 5) and scores.dtype == torch.float32
    assert torch.allclose(scores, expected)
    index = LexicalIndex(targets)
    assert torch.equal(index.scores(queries), scores)
    assert index.scores([]).shape == (0, 5)


def test_explain() -> None:
    assert explain("structure of Fe4O6", Composition("Fe2O3")) == "formula match Fe2O3"
    assert explain("iron oxide", Composition("Fe3O4")) == "elements Fe,O (Jaccard 1.00)"
    assert explain("iron", Composition("Fe3O4")) == "elements Fe (Jaccard 0.50)"
    assert explain("a new mineral", Composition("Fe3O4")) == "query names no element"
    assert explain("silicon", Composition("NaCl")) == "no element in common"


@pytest.mark.parametrize(
    "amounts,expected",
    [
        ({"Fe": 4, "O": 6}, "Fe2O3"),
        ({"Mg": 7.2, "Fe": 0.8, "Si": 4, "O": 16}, "Mg1.8Fe0.2SiO4"),  # olivine cell, Z = 4
        ({"Cs": 1, "Sn": 0.9, "In": 0.0672, "Cl": 3}, "CsIn0.0672Sn0.9Cl3"),  # COD 4003024
        ({"Mg": 2, "Al": 1.999998, "O": 8}, "MgAlO4"),  # rounded occupancies are whole
        ({"Cu": 2.2848, "Se": 4}, "Cu0.5712Se"),  # Cu spread over partly occupied sites
    ],
)
def test_reduced_formula_of_a_disordered_composition(amounts, expected) -> None:
    formula = reduced_formula(Composition(amounts))
    assert formula == expected
    assert formula_key(Composition(formula)) == formula_key(Composition(amounts))


def test_a_disordered_target_is_scored_by_its_full_composition() -> None:
    """Cs(Sn0.9In0.07)Cl3: indium is one of its elements; the dominant-element formula is no
    exact match any more, the written mixed formula is."""
    target = Composition({"Cs": 1, "Sn": 0.9, "In": 0.07, "Cl": 3})
    scores = lexical_scores(
        ["indium caesium chloride", "CsSnCl3", "Cs(Sn0.9In0.07)Cl3"], [target], element_weight=0.8
    )
    torch.testing.assert_close(scores[:, 0], torch.tensor([0.8 * 3 / 4, 0.8 * 3 / 4, 1.0]))
    assert explain("Cs(Sn0.9In0.07)Cl3", target) == "formula match CsIn0.07Sn0.9Cl3"
