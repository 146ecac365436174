"""Checking a structure's composition against the formula its source states.

A CIF's ``_chemical_formula_sum`` (and, for the AMCSD default data, AMCSD's own formula column)
says what the material is. A structure whose sites say something else lost or gained an element
on the way (a misread label, a dropped disordered group, a dummy atom read as carbon) and would
teach the model a wrong pairing, so ingestion rejects it (reason ``formula_mismatch``).

The comparison (:func:`check_formula`):

- Both sides are reduced to *fractions over the non-hydrogen elements* (amount of an element
  divided by the summed amount of all non-H elements). This normalises away the number of
  formula units per cell (Z) and a primitive-cell reduction; it is the comparison "by reduced
  ratios".
- **Element set.** Every non-H element of the stated formula must be on a site, and every non-H
  element on a site must be in the formula. Otherwise: mismatch.
- **Amounts.** Each non-H element's fraction may differ from the stated one by at most
  ``FRACTION_TOL`` (absolute, 0.02) plus ``RELATIVE_TOL`` (10 %) of the stated fraction. Stated
  formulas are often rounded or come from a chemical analysis rather than from the refined
  occupancies (AMCSD ``Mg3.05 Al1.9 Si3.05 O12`` next to a site model of Mg3Al2Si3O12); this
  tolerance keeps those and still catches a lost sublattice (CaCO3 read as CaO3 changes the Ca
  fraction from 0.2 to 0.25 and C from 0.2 to 0).
- **Hydrogen.** X-ray structures often leave hydrogen atoms unlocated. When the structure has no
  H site but the formula states H, hydrogen is exempt and the result says so
  (:attr:`FormulaCheck.hydrogen_not_located`, kept in the record's ``meta``). When the structure
  has H sites, the H amount relative to the non-H atoms is compared with the same tolerance
  as above, except that fewer located H than stated (partially located hydrogen) is allowed.
- A formula that cannot be read (``?``, prose, unknown symbols) is not checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from pymatgen.core import Element

FRACTION_TOL = 0.02
RELATIVE_TOL = 0.10
_ISOTOPES = {"D": "H", "T": "H"}
_TOKEN = re.compile(r"\s*(?:(\()|(\))\s*(\d*\.?\d*)|([A-Z][a-z]?)\s*(\d*\.?\d*))")


@dataclass(frozen=True)
class FormulaCheck:
    """Result of comparing a structure with a stated formula.

    Attributes:
        mismatch: why the two disagree, or ``""`` when they agree.
        hydrogen_not_located: the formula has H but no site does (H was exempt).
    """

    mismatch: str = ""
    hydrogen_not_located: bool = False


def parse_formula(text: str) -> dict[str, float] | None:
    """Amounts per element of a formula such as ``C12 H10 N2 O``, ``(Pr.7 Ca.2 Sr.1) Mn O3``,
    ``Ca3 Al2 (Si O4)3`` or ``D2 O`` (deuterium and tritium count as H); None when unreadable."""
    amounts = _parse_formula(text)
    return dict(amounts) if amounts is not None else None


@lru_cache(maxsize=4096)
def _parse_formula(text: str) -> tuple[tuple[str, float], ...] | None:
    text = text.strip().strip("'\"").strip()
    if not text:
        return None
    stack: list[dict[str, float]] = [{}]
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            return None if text[position:].strip() else _finish(stack)
        position = match.end()
        opening, closing, multiplier, symbol, amount = match.groups()
        if opening:
            stack.append({})
        elif closing:
            if len(stack) == 1:
                return None
            group = stack.pop()
            factor = _number(multiplier)
            if factor is None:
                return None
            for element, value in group.items():
                stack[-1][element] = stack[-1].get(element, 0.0) + value * factor
        else:
            element = _ISOTOPES.get(symbol, symbol)
            value = _number(amount)
            if value is None or not _is_element(element):
                return None
            stack[-1][element] = stack[-1].get(element, 0.0) + value
    return _finish(stack)


def check_formula(stated: Mapping[str, float], composition: Mapping[str, float]) -> FormulaCheck:
    """Compare a structure's ``composition`` (amount per element, any scale) with a ``stated``
    formula (amount per element, any scale); see the module docstring for the rules."""
    stated_h, found_h = stated.get("H", 0.0), composition.get("H", 0.0)
    stated_rest = {el: value for el, value in stated.items() if el != "H" and value > 0}
    found_rest = {el: value for el, value in composition.items() if el != "H" and value > 0}
    hydrogen_not_located = stated_h > 0 and found_h == 0
    if not stated_rest or not found_rest:
        if stated_rest or found_rest:
            return FormulaCheck("only one side has elements other than H", hydrogen_not_located)
        return FormulaCheck("", hydrogen_not_located)
    missing = sorted(set(stated_rest) - set(found_rest))
    extra = sorted(set(found_rest) - set(stated_rest))
    if missing or extra:
        parts = [
            f"{' '.join(els)} {what}" for els, what in ((missing, "missing"), (extra, "extra"))
        ]
        message = ", ".join(part for part, els in zip(parts, (missing, extra), strict=True) if els)
        return FormulaCheck(f"elements differ from the formula: {message}", hydrogen_not_located)
    stated_total, found_total = sum(stated_rest.values()), sum(found_rest.values())
    for element in sorted(stated_rest):
        want, got = stated_rest[element] / stated_total, found_rest[element] / found_total
        if not _close(got, want):
            return FormulaCheck(
                f"{element} is {got:.3f} of the non-H atoms, the formula says {want:.3f}",
                hydrogen_not_located,
            )
    if found_h > 0:
        want, got = stated_h / stated_total, found_h / found_total
        if got > want and not _close(got, want):
            return FormulaCheck(
                f"{got:.3f} H per non-H atom, the formula says {want:.3f}", hydrogen_not_located
            )
    return FormulaCheck("", hydrogen_not_located)


def _close(got: float, want: float) -> bool:
    return abs(got - want) <= FRACTION_TOL + RELATIVE_TOL * want


def _number(text: str) -> float | None:
    if not text:
        return 1.0
    try:
        return float(text)
    except ValueError:
        return None


@lru_cache(maxsize=256)
def _is_element(symbol: str) -> bool:
    return Element.is_valid_symbol(symbol)


def _finish(stack: list[dict[str, float]]) -> tuple[tuple[str, float], ...] | None:
    if len(stack) != 1 or not stack[0]:
        return None
    return tuple(stack[0].items())
