"""Class labels computed from a crystal structure: targets for probes and fine-tuning.

Two labellings (:class:`ClassTarget`), each class names and a function from a record to a class
index (``None`` when the structure has no label):

- ``crystal_system``: the 7 crystal systems, from pymatgen's ``SpacegroupAnalyzer`` at a
  tolerance of :data:`SYMPREC` = 0.1 Å, of the structure as reported. A geometric property.
  spglib takes a disordered structure as it is: pymatgen gives every distinct mix of species on a
  site (``{Mg: 0.5, Ti: 0.5}``, ``{Cu: 0.3}``) its own atom type, so the result is the symmetry
  of the average structure, which is what the paper reports. No dominant-element stand-in is
  used: relabelling a mixed site by its majority element can merge it with an ordered site of
  that element and raise the symmetry.
- ``mineral_class``: the chemical class of a mineral in the order of the Nickel–Strunz
  classification (classes 1–9), decided from the elements of the full, occupancy-weighted
  composition (every element on any site, however small its occupancy: vaterite's disordered
  carbonate counts) by the first rule that matches:

  1. ``silicates``: Si or Ge, with O;
  2. ``phosphates``: P or As, with O (arsenates);
  3. ``sulfates``: S or Se, with O (selenates);
  4. ``borates``: B with O;
  5. ``carbonates``: C or N with O (nitrates);
  6. ``oxides``: any other compound of O (hydroxides too);
  7. ``halides``: F, Cl, Br or I (no O);
  8. ``sulfides``: S, Se or Te (no O), or As, Sb or Bi with another element (arsenides,
     antimonides, sulfosalts);
  9. ``elements``: everything else (native elements, alloys, carbides, nitrides, phosphides).

  This approximates the curated class: an element's role cannot be read from a composition, so
  arsenites and sulfites count as arsenates and sulfates; V, Cr, Mo and W, which are cations in
  oxides (chromite) as often as anion formers (vanadates, chromates, molybdates, tungstates), are
  left to the oxides; oxyhalides count as oxides and oxalates as carbonates. The first match
  decides, so a silicate that also holds carbonate or halide is a silicate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from pymatgen.core import Composition

from clasp_pl.data.records import CrystalRecord
from clasp_pl.data.symmetry import space_group

CRYSTAL_SYSTEM = "crystal_system"
CRYSTAL_SYSTEMS = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "trigonal",
    "hexagonal",
    "cubic",
)
SYMPREC = 0.1  # Å, tolerance of the symmetry analysis behind ``crystal_system``

MINERAL_CLASS = "mineral_class"
MINERAL_CLASSES = (
    "elements",
    "sulfides",
    "halides",
    "oxides",
    "carbonates",
    "borates",
    "sulfates",
    "phosphates",
    "silicates",
)
CLASS_NOUNS = {
    "elements": "native element or alloy",
    "sulfides": "sulfide",
    "halides": "halide",
    "oxides": "oxide",
    "carbonates": "carbonate",
    "borates": "borate",
    "sulfates": "sulfate",
    "phosphates": "phosphate",
    "silicates": "silicate",
}
"""The singular noun of each :data:`MINERAL_CLASSES` name, for captions and queries in words."""
# (class, elements of which one must be present) for the classes that need oxygen, in order.
_OXYANION_RULES = (
    ("silicates", {"Si", "Ge"}),
    ("phosphates", {"P", "As"}),
    ("sulfates", {"S", "Se"}),
    ("borates", {"B"}),
    ("carbonates", {"C", "N"}),
)
_HALOGENS = {"F", "Cl", "Br", "I"}
_CHALCOGENS = {"S", "Se", "Te"}
_PNICTIDE_ANIONS = {"As", "Sb", "Bi"}


def crystal_system_index(record: CrystalRecord) -> int | None:
    """Index in :data:`CRYSTAL_SYSTEMS` of the record's crystal system (of its structure as
    reported, disorder kept); ``None`` when spglib cannot analyse the structure."""
    group = space_group(record.to_structure(), SYMPREC)
    return None if group is None else CRYSTAL_SYSTEMS.index(group.crystal_system)


def mineral_class_of(composition: Composition | str) -> str:
    """The Nickel–Strunz-style chemical class (a :data:`MINERAL_CLASSES` name) of a
    composition, by the rules of the module docstring (e.g. ``"CaCO3"`` -> ``carbonates``)."""
    elements = {element.symbol for element in Composition(composition).elements}
    if "O" in elements:
        for name, formers in _OXYANION_RULES:
            if elements & formers:
                return name
        return "oxides"
    if elements & _HALOGENS:
        return "halides"
    if elements & _CHALCOGENS or (elements & _PNICTIDE_ANIONS and len(elements) > 1):
        return "sulfides"
    return "elements"


def mineral_class_index(record: CrystalRecord) -> int:
    """Index in :data:`MINERAL_CLASSES` of the record's chemical class (of its full
    composition)."""
    return MINERAL_CLASSES.index(mineral_class_of(record.composition))


class ClassTarget(NamedTuple):
    """A classification target.

    Attributes:
        classes: the class names; a label is an index into them.
        label: a record's class index, ``None`` when its structure has no label.
    """

    classes: tuple[str, ...]
    label: Callable[[CrystalRecord], int | None]


# Classification targets by name.
CLASS_TARGETS: dict[str, ClassTarget] = {
    CRYSTAL_SYSTEM: ClassTarget(CRYSTAL_SYSTEMS, crystal_system_index),
    MINERAL_CLASS: ClassTarget(MINERAL_CLASSES, mineral_class_index),
}
