"""Lexical chemistry matching between free text (a title, a query) and compositions.

:func:`parse_formulas` finds chemical formulas written in text, :func:`mentioned_elements` the
set of elements a text names (through formulas, element names, anion words and chemical
systems), and :class:`LexicalIndex` scores query texts against a list of compositions: the full,
occupancy-weighted compositions of the structures (a disordered site contributes every element on
it), written out by :func:`reduced_formula`.

Formula rules (documented heuristics, tuned for titles of crystallography papers):

* Markup is normalised first: ``~5~`` subscripts (``KNb~5~O~13~``), ``<sub>``/``<sup>`` tags,
  ``_{5}`` / ``_5``, Unicode subscript digits. Superscripts (``<sup>2+</sup>``, ``^2+^``,
  ``²⁺``), trailing charges (``Fe3+``, ``O2-``) and Roman oxidation states in parentheses
  (``Fe(III)``) are dropped.
* Hydrates: ``CuSO4·5H2O``, ``CuSO4•5H2O``, ``CuSO4*5H2O`` and ``CuSO4.5H2O`` (a dot before
  ``[n]H2O``) become ``CuSO4(H2O)5``; a variable count (``·xH2O``, ``·nH2O``) drops the water.
* Parentheses and brackets (``Ca(OH)2``, ``[Cu(NH3)4]SO4``) are kept; comma-separated site
  mixtures split the site evenly: ``(Mg,Fe)2SiO4`` -> ``(Mg0.5Fe0.5)2SiO4``.
* Formulas written with spaces (``Mg2 Si O4``, ``K Nb5 O13``) are joined when at least two
  consecutive words are each one element symbol with an optional count and at least one of
  them has a count; English look-alike symbols without a count (``In``, ``As``, ``At``...) are
  trimmed from the ends of such a run.
* Words are split on ``-`` and ``/`` (``2H-MoS2``, ``LiFePO4/C``); each piece is a candidate.
* A candidate is accepted only if it is built from element symbols (Z = 1..103), counts and
  brackets, and (a) has at least two distinct elements or a count, (b) is not all capitals
  without a digit (rejects acronyms and Roman numerals: ``CO``, ``NO``, ``II``, ``IV``; the
  price is missing ``KI``, ``BN``...), and (c) is not one element whose symbol is a lattice
  centring letter of space-group symbols (``P21``, ``C2``, ``I41``, ``Pm3``... are rejected).
  Lone element symbols (``Fe``, ``In``, ``Ca``) are never formulas. Site labels such as
  ``Fe2`` are accepted (as iron): a known false positive.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

import torch
from pymatgen.core import Composition, Element
from torch import Tensor

N_MATCHED_ELEMENTS = 103
"""How many elements text is matched against: H (Z = 1) to Lr (Z = 103), one column ``Z - 1``
of the element vectors each (the composition descriptor of :mod:`clasp_pl.data.composition`
has its own, shorter, range)."""

_SYMBOLS = {e.symbol: e.Z for e in Element if e.Z <= N_MATCHED_ELEMENTS}
_ENGLISH_LOOKALIKES = {"I", "In", "As", "At", "Be", "He", "No", "Am", "Es", "Ne", "Ho", "Os"}
_SPACE_GROUP_LETTERS = {"P", "C", "I", "F", "R", "B", "Pa", "Pm", "Fm", "Cm", "Am"}
_ROMAN = r"(?:I|II|III|IV|V|VI|VII|VIII)"

_MARKUP = [
    (re.compile(r"<sup>.*?</sup>|\^[^\s^]*\^|\^\{[^}]*\}|[⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻]"), ""),
    (re.compile(r"<sub>(.*?)</sub>|~([^\s~]*)~|_\{([^}]*)\}|_(\d+)"), r"\1\2\3\4"),
    (re.compile(r"</?\w+>|\$"), ""),
    (re.compile(r"[−–—]"), "-"),
    (re.compile(r"(?<=[A-Za-z])\(" + _ROMAN + r"\)"), ""),
    (re.compile(r"(?<=\S)\d*\+"), ""),
    (re.compile(r"\s*[·•⋅∙]\s*|(?<=[\w)\]])\*(?=[\dA-Z(])|(?<=[\w)\]])\.(?=\d*[HD]2O\b)"), "·"),
]
_SUBSCRIPTS = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")
_GROUP = re.compile(r"[A-Z][a-z]?\d*(?:\.\d+)?")
_FORMULA = re.compile(r"(?:[A-Z][a-z]?|\d+(?:\.\d+)?|[()\[\]])+")
_SYMBOL = re.compile(r"[A-Z][a-z]?")
_MIXED_SITE = re.compile(r"\(([^()]*,[^()]*)\)")
_HYDRATE_PART = re.compile(r"(\d+(?:\.\d+)?|[xnyz])?(.+)")
_STRIP = "\"'“”‘’.,;:!?"
_ION = re.compile(
    r"\b([A-Z][a-z]?)(?=\d?\+|\d?[-−](?![\w-])|<sup>[^<]*[+−-]|\^\d*[+−-]\^|[²³⁴⁵⁶⁷]?[⁺⁻]"
    r"|\(" + _ROMAN + r"\))"
)

_UNIT_COUNT = re.compile(r"(?<=[A-Za-z])1(?![\d.])")
FORMULA_DECIMALS = 4
"""Decimals of the amounts :func:`reduced_formula` writes."""
WHOLE_TOLERANCE = 1e-3
"""An amount this close to a whole number counts as whole in :func:`reduced_formula`."""

_ANION_WORDS = {
    "oxide": "O",
    "hydroxide": "OH",
    "peroxide": "O",
    "sulfide": "S",
    "sulphide": "S",
    "sulfate": "SO",
    "sulphate": "SO",
    "carbonate": "CO",
    "silicate": "SiO",
    "phosphate": "PO",
    "nitrate": "NO",
    "nitride": "N",
    "carbide": "C",
    "fluoride": "F",
    "chloride": "Cl",
    "bromide": "Br",
    "iodide": "I",
    "hydride": "H",
    "borate": "BO",
    "selenide": "Se",
    "telluride": "Te",
    "arsenide": "As",
    "arsenate": "AsO",
    "hydrate": "HO",
}
_ANION_PREFIX = r"(?:di|tri|tetra|penta|sesqui|sub|thio|alumino|boro|oxy|hydroxy|fluoro)?"


def parse_formulas(text: str) -> list[Composition]:
    """Chemical formulas written in ``text``, in order of appearance (see module rules).

    Example: ``parse_formulas("Crystal structure of KNb~5~O~13~ and Mg2 Si O4")`` gives
    ``[Composition("KNb5O13"), Composition("Mg2SiO4")]``.
    """
    formulas = []
    for word in _candidate_words(text):
        for piece in re.split(r"[-/]", word):
            composition = _parse_candidate(piece)
            if composition is not None:
                formulas.append(composition)
    return formulas


def mentioned_elements(text: str) -> set[str]:
    """Element symbols named in ``text``.

    Sources: the elements of :func:`parse_formulas`; element names (pymatgen long names plus
    ``aluminium``, ``sulphur``, ``caesium``; whole words, case-insensitive; ``lead`` is not
    counted before ``to``/``into``); anion words (``oxide`` -> O, ``silicates`` -> Si, O...,
    with common prefixes such as ``dioxide``); chemical systems of bare symbols joined by
    ``-`` or ``/`` with at least one two-letter symbol (``Fe-Ni``, ``Li-Mn-O``; ``P-V`` and
    ``O-H`` are not counted); ions, i.e. a symbol with a charge or an oxidation state
    (``Fe3+``, ``O2-``, ``Mn<sup>2+</sup>``, ``Fe(III)``).
    """
    elements = {el.symbol for comp in parse_formulas(text) for el in comp.elements}
    elements.update(s for s in _ION.findall(text) if s in _SYMBOLS)
    normalised = _normalise_markup(text)
    for match in _name_pattern().finditer(normalised):
        elements.add(_name_to_symbol()[match.group(0).lower()])
    for match in _anion_pattern().finditer(normalised):
        elements.update(_SYMBOL.findall(_ANION_WORDS[match.group("word").lower()]))
    for word in _candidate_words(text):
        parts = re.split(r"[-/]", word)
        if len(parts) > 1 and all(p in _SYMBOLS for p in parts) and max(map(len, parts)) == 2:
            elements.update(parts)
    return elements


def element_vector(elements: Iterable[str]) -> Tensor:
    """``[103]`` bool: which of H..Lr are in ``elements`` (other symbols are ignored)."""
    vector = torch.zeros(N_MATCHED_ELEMENTS, dtype=torch.bool)
    for symbol in elements:
        if symbol in _SYMBOLS:
            vector[_SYMBOLS[symbol] - 1] = True
    return vector


def formula_key(composition: Composition) -> tuple[tuple[str, float], ...]:
    """Hashable reduced formula: sorted (element, atomic fraction rounded to 1e-4) pairs.

    Equal for ``Fe2O3`` and ``Fe4O6``, and for ``(Mg0.5Fe0.5)2SiO4`` and ``MgFeSiO4``.
    """
    amounts = composition.get_el_amt_dict()
    total = sum(amounts.values())
    return tuple(sorted((el, round(amt / total, 4)) for el, amt in amounts.items()))


def reduced_formula(composition: Composition) -> str:
    """The formula of one formula unit, disorder included.

    Whole amounts reduce as in pymatgen (``Fe4O6`` -> ``Fe2O3``). An occupancy-weighted
    composition is divided by the greatest common divisor of its whole amounts and its amounts
    are rounded to :data:`FORMULA_DECIMALS` decimals: ``Mg7.2 Fe0.8 Si4 O16`` -> ``Mg1.8Fe0.2SiO4``,
    ``Cs Sn0.9 In0.0672 Cl3`` -> ``CsIn0.0672Sn0.9Cl3`` (not the dominant-element ``CsSnCl3``).
    """
    amounts = composition.get_el_amt_dict()
    whole = [
        round(amount)
        for amount in amounts.values()
        if round(amount) > 0 and abs(amount - round(amount)) <= WHOLE_TOLERANCE
    ]
    factor = math.gcd(*whole) if whole else 1
    unit = Composition({el: round(amt / factor, FORMULA_DECIMALS) for el, amt in amounts.items()})
    return _UNIT_COUNT.sub("", unit.reduced_formula)


class LexicalIndex:
    """Compositions of the targets, encoded once for scoring many queries.

    A (query, target) score is ``1.0`` when a formula of the query equals the target's reduced
    formula (:func:`formula_key`), else ``element_weight * J`` where ``J`` is the Jaccard index
    ``|Q & T| / |Q | T|`` between the elements the query mentions (:func:`mentioned_elements`)
    and the target's elements; ``0`` when the query names no element. Values lie in [0, 1].

    Args:
        compositions: ``[Nt]`` target compositions.
        element_weight: scale of element-overlap scores, below 1 so that an exact formula
            match always ranks above a different formula with the same elements.
    """

    def __init__(self, compositions: Sequence[Composition], element_weight: float = 0.8) -> None:
        self.element_weight = element_weight
        self.elements = (
            torch.stack(
                [element_vector(el.symbol for el in c.elements) for c in compositions]
            ).float()
            if compositions
            else torch.zeros(0, N_MATCHED_ELEMENTS)
        )
        self.n_elements = self.elements.sum(1)
        self.by_formula: dict[tuple[tuple[str, float], ...], list[int]] = {}
        for index, composition in enumerate(compositions):
            self.by_formula.setdefault(formula_key(composition), []).append(index)

    def scores(self, query_texts: Sequence[str]) -> Tensor:
        """``[Nq, Nt]`` float32 lexical scores of ``query_texts`` against the targets."""
        queries = [(parse_formulas(t), mentioned_elements(t)) for t in query_texts]
        query_elements = (
            torch.stack([element_vector(els) for _, els in queries]).float()
            if queries
            else torch.zeros(0, N_MATCHED_ELEMENTS)
        )
        common = query_elements @ self.elements.T
        union = query_elements.sum(1, keepdim=True) + self.n_elements[None, :] - common
        scores = self.element_weight * common / union.clamp_min(1)
        for row, (formulas, _) in enumerate(queries):
            for composition in formulas:
                scores[row, self.by_formula.get(formula_key(composition), [])] = 1.0
        return scores


def lexical_scores(
    query_texts: Sequence[str], compositions: Sequence[Composition], element_weight: float = 0.8
) -> Tensor:
    """``[Nq, Nt]`` scores in [0, 1] of texts against compositions (see :class:`LexicalIndex`).

    For many queries against the same targets, build the :class:`LexicalIndex` once.
    """
    return LexicalIndex(compositions, element_weight).scores(query_texts)


def explain(query_text: str, composition: Composition) -> str:
    """Why ``query_text`` scores against ``composition``, in a few words.

    E.g. ``"formula match Fe2O3"``, ``"elements Fe,O (Jaccard 0.67)"``, ``"query names no
    element"`` or ``"no element in common"``.
    """
    key = formula_key(composition)
    if any(formula_key(f) == key for f in parse_formulas(query_text)):
        return f"formula match {reduced_formula(composition)}"
    query = mentioned_elements(query_text)
    if not query:
        return "query names no element"
    target = {el.symbol for el in composition.elements}
    common = sorted(query & target)
    if not common:
        return "no element in common"
    return f"elements {','.join(common)} (Jaccard {len(common) / len(query | target):.2f})"


def _normalise_markup(text: str) -> str:
    """Apply the markup, charge and hydrate rewrites of the module docstring."""
    text = text.translate(_SUBSCRIPTS)
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    return text


def _candidate_words(text: str) -> list[str]:
    """Whitespace words of the normalised text, stripped, with spaced formulas joined."""
    words = [_strip_word(w) for w in _normalise_markup(text).split()]
    out: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if _GROUP.fullmatch(word) and _SYMBOL.match(word).group(0) in _SYMBOLS:
            run.append(word)
            continue
        out.extend(_join_run(run))
        run = []
        if word:
            out.append(word)
    return out


def _join_run(run: list[str]) -> list[str]:
    """Join a run of single-element words into one formula if it qualifies, else keep them."""
    start, stop = 0, len(run)
    while start < stop and run[start] in _ENGLISH_LOOKALIKES:
        start += 1
    while stop > start and run[stop - 1] in _ENGLISH_LOOKALIKES:
        stop -= 1
    core = run[start:stop]
    if len(core) < 2 or not any(c.isdigit() for word in core for c in word):
        return run
    return [*run[:start], "".join(core), *run[stop:]]


def _strip_word(word: str) -> str:
    """Strip punctuation, unbalanced brackets and a trailing charge (``O2-``) from a word."""
    previous = None
    while word != previous:
        previous = word
        word = word.strip(_STRIP)
        for opening, closing in ("()", "[]"):
            if word.startswith(opening) and word.count(opening) > word.count(closing):
                word = word[1:]
            if word.endswith(closing) and word.count(closing) > word.count(opening):
                word = word[:-1]
    return re.sub(r"(?<=[A-Za-z)\]])\d*-$", "", word)


def _parse_candidate(piece: str) -> Composition | None:
    """The composition of one candidate word if it passes the acceptance rules, else None."""
    if not piece or piece.isupper() and not any(c.isdigit() for c in piece):
        return None
    base, *hydrates = piece.split("·")
    formula = _MIXED_SITE.sub(_split_mixed_site, base)
    for part in hydrates:
        count, water = _HYDRATE_PART.fullmatch(part).groups()
        if count is None or count[0].isdigit():
            formula += f"({water}){count or ''}"
    symbols = _SYMBOL.findall(formula)
    if not _FORMULA.fullmatch(formula) or not symbols or formula[0].isdigit():
        return None
    if any(s not in _SYMBOLS for s in symbols) or not _brackets_balanced(formula):
        return None
    distinct = set(symbols)
    if len(distinct) < 2 and not any(c.isdigit() for c in formula):
        return None
    if len(distinct) == 1 and symbols[0] in _SPACE_GROUP_LETTERS:
        return None
    try:
        return Composition(formula)
    except (ValueError, KeyError):
        return None


def _split_mixed_site(match: re.Match[str]) -> str:
    """``(Mg,Fe)`` -> ``(Mg0.5Fe0.5)``; ``(Mg0.8,Fe0.2)`` -> ``(Mg0.8Fe0.2)``."""
    parts = [p.strip() for p in match.group(1).split(",")]
    if all(p in _SYMBOLS for p in parts):
        return "(" + "".join(f"{p}{1 / len(parts):.4g}" for p in parts) + ")"
    return "(" + "".join(parts) + ")"


def _brackets_balanced(formula: str) -> bool:
    """Whether ``()`` and ``[]`` nest properly."""
    stack: list[str] = []
    for char in formula:
        if char in "([":
            stack.append(char)
        elif char in ")]":
            if not stack or stack.pop() != "([)]"["([)]".index(char) - 2]:
                return False
    return not stack


@lru_cache(maxsize=1)
def _name_to_symbol() -> dict[str, str]:
    """Lower-case element name -> symbol, with British spellings."""
    names = {Element(s).long_name.lower(): s for s in _SYMBOLS}
    names.update({"aluminium": "Al", "sulphur": "S", "caesium": "Cs"})
    return names


@lru_cache(maxsize=1)
def _name_pattern() -> re.Pattern[str]:
    """Whole-word element names; ``lead`` only when not followed by ``to``/``into``."""
    names = sorted(_name_to_symbol(), key=len, reverse=True)
    alternatives = [n if n != "lead" else r"lead(?!\s+(?:to|into)\b)" for n in names]
    return re.compile(r"\b(?:" + "|".join(alternatives) + r")\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _anion_pattern() -> re.Pattern[str]:
    """Anion words (singular or plural) with an optional common prefix."""
    words = "|".join(sorted(_ANION_WORDS, key=len, reverse=True))
    return re.compile(rf"\b{_ANION_PREFIX}(?P<word>{words})s?\b", re.IGNORECASE)
