"""Keyword captions: offline extraction (a stand-in for the paper's LLM keywords) and loading.

The CLaSP paper fine-tunes on keyword captions that an LLM (Llama-3.1-70B) wrote from each
paper's title and abstract, with measurement techniques and generic terms left out. Without an
LLM, :func:`extract_keywords` produces a comparable caption offline with YAKE (unsupervised,
statistical, about a millisecond per title on one CPU core): candidate 1-3-word phrases ranked by
YAKE, then

- phrases made only of generic terms (``crystal structure``, ``X-ray diffraction``,
  ``refinement``, ``study``... see :data:`DEFAULT_GENERIC_TERMS`; configurable) are removed,
- phrases with an inner stop word (``study of synthetic``) are removed,
- duplicates are removed case- and plural-insensitively, and so is any phrase that adds no word
  to the better-ranked phrases already kept (``MAS NMR`` after ``MAS NMR spectrum``),
- formula-like tokens that YAKE skips (``Sr5(AsO4)3Cl``, ``lizardite-1T``) are appended,
- at most ``max_keywords`` remain, best first.

These keywords are extractive (words of the title/abstract), not the LLM's abstractive ones, so
they are a weaker stage-2 signal; the official captions can be used instead via
:func:`load_keyword_captions`, which reads both ``{id: [keywords...]}`` (what ``clasp data
keywords`` writes) and the official release (``keyword_captions_cod_full_20240331.zip``,
unzipped): a JSON object whose values are JSON strings, optionally fenced in ```` ```json ````,
each holding a list of ``{"ID": ..., "Keywords": [...]}``.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clasp_pl.data.records import CrystalRecord, iter_records
from clasp_pl.rank_zero import rank_zero_logger

DEFAULT_MAX_KEYWORDS = 10

log = rank_zero_logger(__name__)

DEFAULT_GENERIC_TERMS: tuple[str, ...] = (
    # techniques (the paper's LLM prompt and the official loader exclude these)
    "crystal structure",
    "crystal lattice",
    "x-ray diffraction",
    "neutron diffraction",
    "powder diffraction",
    "single-crystal x-ray diffraction",
    "electron diffraction",
    "diffraction",
    "diffractometry",
    "x-ray",
    "neutron",
    "synchrotron",
    "powder",
    "single",
    "single crystal",
    "high-resolution",
    "refinement",
    "rietveld",
    "structure determination",
    "structure refinement",
    "structure solution",
    "crystal chemistry",
    "crystal chemical",
    "crystallography",
    "crystallographic",
    # words that say nothing about the material on their own
    "crystal",
    "structure",
    "structural",
    "lattice",
    "unit cell",
    "study",
    "investigation",
    "analysis",
    "determination",
    "characterization",
    "description",
    "redefinition",
    "parameterization",
    "new",
    "data",
    "effect",
    "evidence",
    "note",
    "report",
    "comparison",
    "relation",
    "behavior",
    "behaviour",
    "nature",
    "origin",
    "occurrence",
    "property",
    "composition",
    "chemistry",
    "phase",
    "term",
    "case",
    "member",
    "related",
)

_TOKEN_SPLIT = re.compile(r"[\s\-_/]+")
# a token with a letter and a digit (formula, polytype), not an isotope label like 57Fe
_FORMULA_LIKE = re.compile(r"^(?=.*[A-Za-z])(?=.*\d)(?!\d+-?[A-Za-z]{1,2}$)\S{4,}$")
_TOKEN_EDGES = " .,;:'\""
_FENCE = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL | re.IGNORECASE)


def _singular(word: str) -> str:
    """A crude English singular, enough to merge ``spinels``/``spinel``, ``series`` stays."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is", "ies")):
        return word[:-1]
    return word


def normalise_keyword(keyword: str) -> tuple[str, ...]:
    """Lower-case, singular word tuple of a keyword: the key for de-duplication."""
    words = _TOKEN_SPLIT.split(keyword.lower().strip(_TOKEN_EDGES + "()[]"))
    return tuple(_singular(word) for word in words if word)


def _unwrap(token: str) -> str:
    """``(FeAl2O4)`` -> ``FeAl2O4``; ``(Na,Ca)Si2O6`` is left alone."""
    if token.startswith("(") and token.endswith(")") and token.count("(") == 1:
        return token[1:-1]
    return token


def _occurrences(words: Sequence[str], part: Sequence[str]) -> list[int]:
    """Start indices of every occurrence of the word sequence ``part`` in ``words``."""
    size = len(part)
    return [i for i in range(len(words) - size + 1) if tuple(words[i : i + size]) == tuple(part)]


class KeywordFilter:
    """Generic-term removal and de-duplication of ranked keyword candidates.

    Args:
        generic_terms: phrases that say nothing specific about the material; a candidate made
            only of these (and stop words) is dropped.
        stopwords: words that may not appear inside a phrase (nor make up a whole phrase).
        max_keywords: keywords kept per entry.
    """

    def __init__(
        self,
        generic_terms: Iterable[str] = DEFAULT_GENERIC_TERMS,
        stopwords: Iterable[str] = (),
        max_keywords: int = DEFAULT_MAX_KEYWORDS,
    ):
        self.generic = {normalise_keyword(term) for term in generic_terms} - {()}
        self.stopwords = {word.lower() for word in stopwords}
        self.max_keywords = max_keywords

    def is_generic(self, words: Sequence[str]) -> bool:
        """True when every word is a stop word or part of a generic term."""
        covered = [word in self.stopwords for word in words]
        for term in self.generic:
            for start in _occurrences(words, term):
                covered[start : start + len(term)] = [True] * len(term)
        return all(covered)

    def __call__(self, candidates: Iterable[str]) -> list[str]:
        """Keep the best ``max_keywords`` specific, distinct candidates (input order = rank)."""
        kept: list[str] = []
        seen: set[str] = set()
        for candidate in candidates:
            words = normalise_keyword(candidate)
            if not words or self.is_generic(words):
                continue
            if any(word in self.stopwords for word in words[1:-1]):
                continue
            if set(words) <= seen | self.stopwords:
                continue  # a duplicate, or only words of better-ranked phrases
            kept.append(candidate.strip())
            seen.update(words)
            if len(kept) == self.max_keywords:
                break
        return kept


class KeywordExtractor:
    """YAKE keyword extraction with :class:`KeywordFilter` post-processing.

    Args:
        max_keywords: keywords per text.
        generic_terms: see :class:`KeywordFilter`.
        max_ngram: longest candidate phrase, in words.
    """

    def __init__(
        self,
        max_keywords: int = DEFAULT_MAX_KEYWORDS,
        generic_terms: Iterable[str] = DEFAULT_GENERIC_TERMS,
        max_ngram: int = 3,
    ):
        try:
            import yake
        except ImportError as error:
            raise ImportError("keyword extraction needs YAKE: pip install yake") from error
        # rank more candidates than needed: filtering removes many of them
        self.yake = yake.KeywordExtractor(lan="en", n=max_ngram, top=6 * max_keywords)
        self.filter = KeywordFilter(generic_terms, self.yake.stopword_set, max_keywords)

    def __call__(self, text: str) -> list[str]:
        """Keywords of one text, best first."""
        if not text.strip():
            return []
        ranked = sorted(self.yake.extract_keywords(text), key=lambda pair: pair[1])
        tokens = (_unwrap(token.strip(_TOKEN_EDGES)) for token in text.split())
        formulas = [token for token in tokens if _FORMULA_LIKE.match(token)]
        return self.filter([phrase for phrase, _score in ranked] + formulas)


def record_text(record: CrystalRecord) -> str:
    """The text keywords are extracted from: title, then abstract."""
    parts = [record.title.strip(), record.abstract.strip()]
    return ". ".join(part.rstrip(".") for part in parts if part)


def extract_keywords(
    records: Iterable[CrystalRecord],
    extractor: KeywordExtractor | None = None,
    *,
    progress: bool = True,
    total: int | None = None,
) -> dict[str, list[str]]:
    """Keywords of every record that has a title or abstract but no keywords yet.

    Records of one paper share their text, so each distinct text is processed once.

    Returns:
        ``{record id: [keywords...]}``, records without any kept keyword included (empty list).
    """
    extractor = extractor or KeywordExtractor()
    by_text: dict[str, list[str]] = {}
    mapping: dict[str, list[str]] = {}
    bar = tqdm(records, total=total, desc="keywords", disable=not progress, file=sys.stderr)
    for record in bar:
        text = record_text(record)
        if record.keywords or not text:
            continue
        if text not in by_text:
            by_text[text] = extractor(text)
        mapping[record.id] = by_text[text]
    return mapping


def write_keywords(mapping: dict[str, list[str]], path: str | Path) -> None:
    """Write ``{id: [keywords...]}`` as compact UTF-8 JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(mapping, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
    )


def read_generic_terms(path: str | Path) -> list[str]:
    """Generic terms from a text file, one per line; blank lines and ``#`` comments ignored."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


# ---------------------------------------------------------------------------------------- loading
@dataclass
class KeywordLoadStats:
    """What :func:`load_keyword_captions` read and skipped.

    Attributes:
        ids: entries returned (ids with at least one keyword left).
        invalid_json: official-format values that were not parseable JSON.
        malformed: entries of the wrong shape (no ``ID``/``Keywords``, keywords not a list...).
        empty: entries left with no keyword after exclusion.
        duplicates: ids seen more than once (the last one wins).
    """

    ids: int = 0
    invalid_json: int = 0
    malformed: int = 0
    empty: int = 0
    duplicates: int = 0

    def summary(self) -> str:
        return (
            f"{self.ids} ids with keywords; skipped: {self.invalid_json} invalid JSON, "
            f"{self.malformed} malformed, {self.empty} empty, {self.duplicates} duplicate ids"
        )


def _parse_fenced_json(text: str) -> Any:
    """JSON inside an optional ```` ```json ... ``` ```` fence (an LLM's answer)."""
    fenced = _FENCE.search(text)
    return json.loads(fenced.group(1) if fenced else text.strip())


def _clean(keywords: Sequence[Any], excluded: set[tuple[str, ...]]) -> list[str] | None:
    """Strings de-duplicated (case/plural-insensitive) without excluded terms; None if any
    element is not a string."""
    if not all(isinstance(keyword, str) for keyword in keywords):
        return None
    seen: set[tuple[str, ...]] = set()
    cleaned: list[str] = []
    for keyword in keywords:
        key = normalise_keyword(keyword)
        if key and key not in excluded and key not in seen:
            seen.add(key)
            cleaned.append(keyword.strip())
    return cleaned


def _official_entries(value: Any, stats: KeywordLoadStats) -> list[tuple[Any, Any]]:
    """``(ID, Keywords)`` pairs of one official-format value (a JSON string of a list)."""
    try:
        parsed = _parse_fenced_json(value)
    except json.JSONDecodeError:
        stats.invalid_json += 1
        return []
    entries = parsed if isinstance(parsed, list) else [parsed]
    pairs = []
    for entry in entries:
        if isinstance(entry, dict) and "ID" in entry and "Keywords" in entry:
            pairs.append((entry["ID"], entry["Keywords"]))
        else:
            stats.malformed += 1
    return pairs


def load_keyword_captions(
    path: str | Path, exclude: Iterable[str] = DEFAULT_GENERIC_TERMS
) -> tuple[dict[str, list[str]], KeywordLoadStats]:
    """Read keyword captions in either supported format (see the module docstring).

    Keywords equal (case/plural-insensitively) to an ``exclude`` term are removed, as the
    official fine-tuning does with its technique list; duplicates within an entry are removed;
    entries left empty are dropped. Malformed values are counted, never fatal.

    Returns:
        ``({id: [keywords...]}, stats)``; ids are strings.
    """
    outer = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(outer, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(outer).__name__}")
    excluded = {normalise_keyword(term) for term in exclude}
    stats = KeywordLoadStats()
    mapping: dict[str, list[str]] = {}
    for key, value in outer.items():
        pairs = _official_entries(value, stats) if isinstance(value, str) else [(key, value)]
        for record_id, keywords in pairs:
            cleaned = _clean(keywords, excluded) if isinstance(keywords, list) else None
            if cleaned is None or isinstance(record_id, dict | list):
                stats.malformed += 1
            elif not cleaned:
                stats.empty += 1
            else:
                stats.duplicates += str(record_id).strip() in mapping
                mapping[str(record_id).strip()] = cleaned
    stats.ids = len(mapping)
    return mapping, stats


def apply_keywords(
    records: Iterable[CrystalRecord], mapping: dict[str, list[str]]
) -> list[CrystalRecord]:
    """Set ``record.keywords`` from ``mapping`` (by id); records not in it are left as they are."""
    applied = []
    for record in records:
        if record.id in mapping:
            record.keywords = list(mapping[record.id])
        applied.append(record)
    return applied


def apply_keyword_file(records: list[CrystalRecord], path: str | Path) -> list[CrystalRecord]:
    """:func:`apply_keywords` with the keyword captions of a file (see
    :func:`load_keyword_captions`); logs how many records it matched and warns when it matched
    none (a keywords file of another dataset, or ids written differently)."""
    mapping, stats = load_keyword_captions(path)
    matched = sum(record.id in mapping for record in records)
    log.info(
        "keywords %s: matched %d of %d records; %s", path, matched, len(records), stats.summary()
    )
    if not matched:
        warnings.warn(
            f"the keywords file {path} matches none of the {len(records)} records: no caption "
            "gets keywords (are its ids those of the records file?)",
            stacklevel=2,
        )
    return apply_keywords(records, mapping)


def keywords_command(
    records_path: str | Path,
    out: str | Path,
    *,
    max_keywords: int = DEFAULT_MAX_KEYWORDS,
    generic_terms_file: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``clasp data keywords``: extract keywords for a records file and write the JSON.

    Returns:
        ``{"records", "ids", "empty", "out"}`` counts.
    """
    terms = read_generic_terms(generic_terms_file) if generic_terms_file else DEFAULT_GENERIC_TERMS
    extractor = KeywordExtractor(max_keywords, terms)
    records = list(iter_records(records_path))
    mapping = extract_keywords(records, extractor, progress=progress, total=len(records))
    write_keywords(mapping, out)
    return {
        "records": len(records),
        "ids": len(mapping),
        "empty": sum(not keywords for keywords in mapping.values()),
        "out": str(out),
    }
