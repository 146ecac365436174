"""Structure captions: a sentence about a record's structure, made from the structure itself.

A title says what a paper was about; a structure caption says what the structure *is*, in the
words a scientist would use to look for it: "vaterite, CaCO3 (chemical system C-Ca-O), a
hexagonal carbonate in space group P6_3/mmc". Mixed with the titles during training
(:mod:`clasp_pl.data.caption_mixing`), they teach the text side formulas, symmetry and
chemical classes, so queries that describe a material work, not only paper titles.

The facts (:class:`StructureFacts`), from the record as reported (disorder kept):

- ``formula``: the reduced formula of the full, occupancy-weighted composition, each amount
  rounded to 2 decimals, and snapped to the nearest integer when within
  :data:`INTEGER_SNAP` of it (vaterite's ``Ca2 C1.99998 O5.99994`` reads ``CaCO3``; a solid
  solution keeps its fractions: ``Fe4.2Si1.5O12``);
- ``chemical_system``: its elements in alphabetical order joined by ``-`` (pymatgen's, the
  Materials Project convention: ``C-Ca-O``);
- ``crystal_system`` and ``space_group`` (Hermann–Mauguin symbol): spglib at
  :data:`~clasp_pl.data.labels.SYMPREC`, as for the crystal-system label; empty when spglib
  cannot analyse the structure (the caption then leaves symmetry out);
- ``chemical_class``: the Nickel–Strunz-style class of :func:`~clasp_pl.data.labels.
  mineral_class_of`, as a singular noun ("carbonate", "silicate");
- ``mineral``: ``meta["mineral"]`` in lower case, where the record has one.

Dimensionality (layered, chain, framework) is not stated: pymatgen's bonded-structure analysis
(Larsen's algorithm over a cut-off bond graph) measured 187 ms per record here, 26 minutes for
the 8,463 default records on one core, against the ~1 minute a caption build may add.

One of :data:`TEMPLATES` phrases the facts, chosen by a stable hash of the record id, so a
record always gets the same caption and the templates are spread evenly over records.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pymatgen.core import Composition

from clasp_pl.data.cache import ArrayStore, ShardResult, key_hash
from clasp_pl.data.featurize import (
    IndexedLines,
    RecordSource,
    build_record_store,
    build_text_feature_store,
    build_token_store,
    featurize_records,
)
from clasp_pl.data.labels import CLASS_NOUNS, SYMPREC, mineral_class_of
from clasp_pl.data.records import CrystalRecord, stable_hash64
from clasp_pl.data.symmetry import space_group
from clasp_pl.text.tower import TextTower

# Part of every structure-caption store's key: bump it whenever the facts, their formatting or
# the templates change, so cached caption texts, tokens and text features are recomputed.
CAPTION_RECIPE_VERSION = 1
INTEGER_SNAP = 0.02  # an amount this close to an integer is written as that integer
# The caption field of the caption stores' records (see caption_record_lines).
CAPTION_FIELD = "title"
_ONE = re.compile(r"[A-Za-z]1$")  # an amount of exactly 1 in a formula term
NO_CAPTION = 0  # caption group id of a record without a caption


class StructureFacts(NamedTuple):
    """What a structure caption says (see the module docstring).

    Attributes:
        formula: reduced formula, e.g. ``CaCO3``.
        chemical_system: e.g. ``C-Ca-O``.
        chemical_class: singular class noun, e.g. ``carbonate``.
        crystal_system: ``triclinic`` ... ``cubic``, or ``""`` when unknown.
        space_group: Hermann–Mauguin symbol, e.g. ``R-3c``, or ``""`` when unknown.
        mineral: lower-case mineral name, or ``""``.
    """

    formula: str
    chemical_system: str
    chemical_class: str
    crystal_system: str
    space_group: str
    mineral: str

    def description_key(self) -> str:
        """What makes two captions describe the same thing (template aside): records with
        equal keys get equal caption group ids."""
        return "|".join((self.mineral, self.formula, self.space_group))


def readable_formula(composition: Composition) -> str:
    """Reduced formula with amounts rounded as the module docstring says, elements in order of
    electronegativity, no brackets (``Ca3Al2Si2O12``, not pymatgen's ``Ca3Al2(SiO6)2``)."""
    amounts = {}
    for element, amount in composition.get_el_amt_dict().items():
        nearest = round(amount)
        rounded = nearest if abs(amount - nearest) <= INTEGER_SNAP else round(amount, 2)
        amounts[element] = max(rounded, 0.01)  # a trace element stays in the formula
    with warnings.catch_warnings():  # noble gases have no electronegativity (sorted last)
        warnings.simplefilter("ignore", UserWarning)
        terms = Composition(amounts).reduced_composition.formula.split()
    return "".join(term.removesuffix("1") if _ONE.search(term) else term for term in terms)


def structure_facts(record: CrystalRecord, symprec: float = SYMPREC) -> StructureFacts:
    """The facts of a record's structure as reported (disorder kept)."""
    composition = record.composition
    group = space_group(record.to_structure(), symprec)
    mineral = record.meta.get("mineral") or ""
    return StructureFacts(
        formula=readable_formula(composition),
        chemical_system=composition.chemical_system,
        chemical_class=CLASS_NOUNS[mineral_class_of(composition)],
        crystal_system=group.crystal_system if group else "",
        space_group=group.symbol if group else "",
        mineral=mineral.strip().lower(),
    )


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _kind(facts: StructureFacts) -> str:
    """``a trigonal carbonate`` (``a carbonate`` without a crystal system)."""
    words = f"{facts.crystal_system} {facts.chemical_class}".strip()
    return f"{_article(words)} {words}"


def _in_group(facts: StructureFacts) -> str:
    return f" in space group {facts.space_group}" if facts.space_group else ""


def _named(facts: StructureFacts) -> str:
    """``calcite, CaCO3`` or ``CaCO3``."""
    return f"{facts.mineral}, {facts.formula}" if facts.mineral else facts.formula


def _template_name_first(facts: StructureFacts) -> str:
    return (
        f"{_named(facts)} (chemical system {facts.chemical_system}), "
        f"{_kind(facts)}{_in_group(facts)}"
    )


def _template_kind_first(facts: StructureFacts) -> str:
    mineral = f", the mineral {facts.mineral}" if facts.mineral else ""
    return (
        f"{_kind(facts)} of formula {facts.formula}{mineral}{_in_group(facts)}, "
        f"chemical system {facts.chemical_system}"
    )


def _template_system_first(facts: StructureFacts) -> str:
    symmetry = f", space group {facts.space_group}" if facts.space_group else ""
    crystal = f" {facts.crystal_system}" if facts.crystal_system else ""
    return (
        f"{facts.chemical_system} {facts.chemical_class}: {_named(facts)},"
        f"{crystal} crystal structure{symmetry}"
    )


TEMPLATES = (_template_name_first, _template_kind_first, _template_system_first)


def phrase(record_id: str, facts: StructureFacts) -> str:
    """The facts in the words of the template that ``record_id`` hashes to."""
    return TEMPLATES[stable_hash64(record_id) % len(TEMPLATES)](facts)


def structure_caption(record: CrystalRecord, symprec: float = SYMPREC) -> str:
    """The structure caption of a record."""
    return phrase(record.id, structure_facts(record, symprec))


def caption_group_id(facts: StructureFacts) -> int:
    """Group id of a caption pair: equal for captions that describe the same material (see
    :func:`~clasp_pl.data.caption_mixing.mix_captions` for why not the paper's)."""
    return stable_hash64("structure-caption:" + facts.description_key())


def _caption_item(symprec: float, index: int, record: CrystalRecord) -> dict[str, np.ndarray]:
    """Store item of a record: ``text`` (uint8 UTF-8 bytes of its caption) and ``group_id
    [1]`` int64 (:func:`caption_group_id`)."""
    facts = structure_facts(record, symprec)
    return {
        "text": np.frombuffer(phrase(record.id, facts).encode("utf-8"), np.uint8),
        "group_id": np.array([caption_group_id(facts)], np.int64),
    }


def caption_shard(symprec: float, indexed_lines: IndexedLines) -> ShardResult:
    """Captions of one shard of records, one item per record; a record whose facts fail gets
    an empty caption and the group id :data:`NO_CAPTION` (never mixed in)."""
    placeholder = {"text": np.zeros(0, np.uint8), "group_id": np.full(1, NO_CAPTION, np.int64)}
    return featurize_records(indexed_lines, functools.partial(_caption_item, symprec), placeholder)


class StructureCaptionStores(NamedTuple):
    """The cached structure captions of a records file, one item per record.

    Attributes:
        texts: ``text`` (UTF-8 bytes) and ``group_id [1]`` per record.
        tokens: ``input_ids`` per record, tokenized like the titles.
        features: ``features [1, H]`` per record (a frozen text tower's pooled output), or
            ``None`` when the text tower is not frozen and cached.
    """

    texts: ArrayStore
    tokens: ArrayStore
    features: ArrayStore | None

    def caption(self, record_index: int) -> str:
        return bytes(self.texts[record_index]["text"]).decode("utf-8")


def caption_record_lines(texts: ArrayStore) -> list[str]:
    """One JSON record per caption whose only text is the caption (in :data:`CAPTION_FIELD`),
    so the title token and text-feature builders tokenize and embed the captions."""
    lines = []
    for index in range(len(texts)):
        caption = bytes(texts[index]["text"]).decode("utf-8")
        record = CrystalRecord(f"caption-{index}", [], [], [], title=caption)
        lines.append(record.to_json())
    return lines


def build_structure_caption_stores(
    records: RecordSource,
    root: str | Path,
    text_model: str,
    max_length: int,
    tower: TextTower | None = None,
    symprec: float = SYMPREC,
    workers: int = 1,
) -> StructureCaptionStores:
    """Build or reuse the structure-caption stores under ``root``: the caption texts (keyed by
    :data:`CAPTION_RECIPE_VERSION` and ``symprec``, from the structures' fingerprint), their
    tokens and, with a frozen ``tower``, its pooled outputs (keyed like the title stores, from
    the fingerprint of the caption texts)."""
    root = Path(root)
    key = {"what": "structure-captions", "recipe": CAPTION_RECIPE_VERSION, "symprec": symprec}
    shard_fn = functools.partial(caption_shard, symprec)
    texts, _ = build_record_store(
        records, root / "texts", shard_fn, key, "structure captions", workers
    )
    source = RecordSource(
        lambda: caption_record_lines(texts), f"{records.fingerprint}:{key_hash(key)}"
    )
    fields: Sequence[str] = (CAPTION_FIELD,)
    tokens = build_token_store(source, root / "tokens", text_model, fields, max_length)
    features = None
    if tower is not None:
        features = build_text_feature_store(
            source, root / "text_features", tower, fields, max_length
        )
    return StructureCaptionStores(texts, tokens, features)
