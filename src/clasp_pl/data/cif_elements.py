"""Element symbols of CIF sites: type symbols and labels, charges, isotopes and dummy atoms."""

from __future__ import annotations

import re
from functools import lru_cache

from pymatgen.core import Element

from clasp_pl.data.rejects import CifError

_ISOTOPES = {"D": "H", "T": "H"}
# dummy atoms and centroids: X, Q peaks, Du/Dum, ring centroids Cg/Cp/Cnt/Ctr/Cent, lone pairs
_DUMMY = re.compile(r"(?:X|Xx|Q|Du|Dum|Cg|Cp|Cnt|Ctr|Cent|Lp)(?![a-z])")


def is_dummy(symbol: str) -> bool:
    """Whether a type symbol or label names a dummy atom or centroid (``X``, ``Cg1``, ``Q2``,
    ``Cent3``; not ``Xe1`` or ``Cu2``: a dummy prefix must not go on in lower case)."""
    return _DUMMY.match(symbol.strip()) is not None


@lru_cache(maxsize=8192)
def site_element(symbol: str) -> str | None:
    """Element of a site's type symbol (or label): None for a dummy atom, ``""`` for a symbol
    that names nothing."""
    if is_dummy(symbol):
        return None
    try:
        return element_symbol(symbol)
    except CifError:
        return ""


@lru_cache(maxsize=4096)
def element_symbol(symbol: str) -> str:
    """Plain element symbol of a CIF type symbol or species (``Fe3+`` → ``Fe``, ``D`` → ``H``).

    Raises:
        CifError: ``unknown_element`` when no element can be read.
    """
    match = re.match(r"[A-Za-z]{1,2}", symbol.strip())
    letters = match.group(0) if match else ""
    for candidate in (letters[:2].capitalize(), letters[:1].upper()):
        if candidate in _ISOTOPES:
            return _ISOTOPES[candidate]
        if candidate and Element.is_valid_symbol(candidate):
            return candidate
    raise CifError("unknown_element", f"unknown element symbol {symbol!r}")
