"""The symmetry operations of a CIF block, from whichever symmetry tags it has.

A CIF states its symmetry in one or more of these ways; the first one found wins, in this order:

1. an explicit list of operations: ``_space_group_symop_operation_xyz`` (CIF 2 / symCIF),
   ``_symmetry_equiv_pos_as_xyz`` (CIF 1) or their DDL2 spellings (``_space_group_symop.operation_xyz``,
   ``_symmetry_equiv.pos_as_xyz``; likewise for the tags below) (the list is what the authors refined in; it is taken as
   given, duplicates removed);
2. a Hall symbol: ``_space_group_name_Hall``, ``_symmetry_space_group_name_Hall``
   (unambiguous: it fixes setting and origin);
3. a Hermann–Mauguin symbol: ``_space_group_name_H-M_alt``, ``_symmetry_space_group_name_H-M``,
   ``_space_group_name_H-M_ref``, ``_space_group_name_H-M_full``. Spellings that are read:
   spaced or not (``P 21/c``, ``P21/c``), the old subscript notation ``P2(1)/c``, ``P 1 21/c 1``,
   lower-case lattice letters, and setting suffixes (``C2:b1`` → ``C 1 2 1`` when the full
   symbol is unknown). A rhombohedral group without a setting suffix uses the rhombohedral axes
   when the cell has them (``a = b = c``, ``α = β = γ ≠ 90°``), the hexagonal ones otherwise;
4. an International Tables number: ``_space_group_IT_number``, ``_symmetry_Int_Tables_number``
   (standard setting);
5. nothing at all: the cell is taken as P1 (as pymatgen does), and the result says so
   (:attr:`Symmetry.assumed_p1`) so that the record can note it.

A tag whose value cannot be read (``'C 2/m 2/c 21/m'``, a garbled triplet) falls through to the
next source; only when the operation list itself is unreadable is the block rejected.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache

import gemmi
import numpy as np

SYMOP_TAGS = (
    "_space_group_symop_operation_xyz",
    "_symmetry_equiv_pos_as_xyz",
    "_space_group_symop.operation_xyz",
    "_symmetry_equiv.pos_as_xyz",
)
HALL_TAGS = (
    "_space_group_name_Hall",
    "_symmetry_space_group_name_Hall",
    "_space_group.name_Hall",
    "_symmetry.space_group_name_Hall",
)
HM_TAGS = (
    "_space_group_name_H-M_alt",
    "_symmetry_space_group_name_H-M",
    "_space_group_name_H-M_ref",
    "_space_group_name_H-M_full",
    "_space_group.name_H-M_alt",
    "_symmetry.space_group_name_H-M",
)
NUMBER_TAGS = (
    "_space_group_IT_number",
    "_symmetry_Int_Tables_number",
    "_space_group.IT_number",
    "_symmetry.Int_Tables_number",
)

_SUBSCRIPT = re.compile(r"(\d)\((\d)\)")  # 2(1) → 21
_SPACES = re.compile(r"\s+")


class SymmetryError(ValueError):
    """An operation list that cannot be read (the message names the operation)."""


@dataclass(frozen=True, eq=False)
class Symmetry:
    """Symmetry operations acting on fractional coordinates: ``x' = rotations @ x + translations``.

    Attributes:
        rotations: ``[n_ops, 3, 3]`` float.
        translations: ``[n_ops, 3]`` float, wrapped into [0, 1).
        source: the tag the operations came from (``"P1 (no symmetry tags)"`` when none).
        assumed_p1: whether the block had no symmetry information at all.
    """

    rotations: np.ndarray
    translations: np.ndarray
    source: str
    assumed_p1: bool = False

    @property
    def n_ops(self) -> int:
        return len(self.rotations)

    @cached_property
    def products(self) -> np.ndarray | None:
        """``[n_ops, n_ops]`` index of the operation ``op_a ∘ op_b`` (``op_b`` first), or None
        when the operations are not a group (not closed, or no identity)."""
        rot = np.rint(self.rotations).astype(np.int64)
        tran = np.rint(self.translations * gemmi.Op.DEN).astype(np.int64)
        eye = np.eye(3, dtype=np.int64)
        if not any(np.array_equal(r, eye) and not t.any() for r, t in zip(rot, tran, strict=True)):
            return None
        keys = _op_keys(rot, tran)
        order = np.argsort(keys)
        rot_ab = np.einsum("aij,bjk->abik", rot, rot)
        tran_ab = (np.einsum("aij,bj->abi", rot, tran) + tran[:, None, :]) % gemmi.Op.DEN
        product_keys = _op_keys(rot_ab.reshape(-1, 3, 3), tran_ab.reshape(-1, 3))
        position = np.searchsorted(keys[order], product_keys).clip(max=len(keys) - 1)
        if not np.array_equal(keys[order][position], product_keys):
            return None
        return order[position].reshape(self.n_ops, self.n_ops)


def block_symmetry(block: gemmi.cif.Block, cell: tuple[float, ...]) -> Symmetry:
    """The symmetry of ``block`` (see the module docstring for the order of sources).

    Args:
        block: a CIF data block.
        cell: ``(a, b, c, alpha, beta, gamma)`` in Å and degrees, used only to choose between the
            rhombohedral and hexagonal settings of an R group.

    Raises:
        SymmetryError: an operation list with an unreadable operation.
    """
    for tag in SYMOP_TAGS:
        raw = _raw_values(block, tag)
        if raw:
            symmetry = _listed_symmetry(raw, tag)
            if symmetry is not None:
                return symmetry
    for tag in HALL_TAGS:
        hall = _tag_text(block, tag)
        if hall:
            try:
                return _from_ops(list(gemmi.symops_from_hall(hall)), tag)
            except (RuntimeError, ValueError):
                continue
    for tag in HM_TAGS:
        group = find_space_group(_tag_text(block, tag), cell)
        if group is not None:
            return _from_ops(list(group.operations()), tag)
    for tag in NUMBER_TAGS:
        number = _tag_text(block, tag)
        if number.isdigit() and 1 <= int(number) <= 230:
            return _from_ops(list(gemmi.find_spacegroup_by_number(int(number)).operations()), tag)
    return _from_ops([gemmi.Op("x,y,z")], "P1 (no symmetry tags)", assumed_p1=True)


def find_space_group(symbol: str, cell: tuple[float, ...]) -> gemmi.SpaceGroup | None:
    """The space group of a Hermann–Mauguin symbol in any common spelling, or None."""
    symbol = _SPACES.sub(" ", _SUBSCRIPT.sub(r"\1\2", symbol)).strip()
    if not symbol or symbol in ("?", "."):
        return None
    symbol = symbol[0].upper() + symbol[1:]
    candidates = [symbol, symbol.replace(" ", "")]
    if ":" in symbol:
        candidates.append(symbol.split(":")[0].strip())
    for candidate in candidates:
        try:
            group = gemmi.find_spacegroup_by_name(candidate)
        except (RuntimeError, ValueError):
            group = None
        if group is not None:
            if group.ext == "H" and ":" not in candidate and _rhombohedral_axes(cell):
                return gemmi.find_spacegroup_by_name(group.xhm().replace(":H", ":R"))
            return group
    return None


def _rhombohedral_axes(cell: tuple[float, ...]) -> bool:
    a, b, c, alpha, beta, gamma = cell
    same_lengths = math.isclose(a, b, rel_tol=1e-3) and math.isclose(b, c, rel_tol=1e-3)
    same_angles = math.isclose(alpha, beta, abs_tol=0.05) and math.isclose(
        beta, gamma, abs_tol=0.05
    )
    return same_lengths and same_angles and abs(alpha - 90.0) > 0.05


def _op(triplet: str, tag: str) -> gemmi.Op:
    try:
        return gemmi.Op(triplet.replace(" ", "").lower())
    except (RuntimeError, ValueError) as err:
        raise SymmetryError(f"bad symmetry operation {triplet!r} in {tag}: {err}") from None


def _from_ops(ops: list[gemmi.Op], source: str, assumed_p1: bool = False) -> Symmetry:
    """Unique operations (translations wrapped into [0, 1)) as arrays, in first-seen order."""
    rotations = np.array([op.rot for op in ops], dtype=np.int64).reshape(-1, 9)
    translations = np.array([op.tran for op in ops], dtype=np.int64) % gemmi.Op.DEN
    _, first = np.unique(np.hstack([rotations, translations]), axis=0, return_index=True)
    first = np.sort(first)
    return Symmetry(
        rotations[first].reshape(-1, 3, 3).astype(float) / gemmi.Op.DEN,
        translations[first].astype(float) / gemmi.Op.DEN,
        source,
        assumed_p1,
    )


@lru_cache(maxsize=2048)
def _listed_symmetry(raw: tuple[str, ...], tag: str) -> Symmetry | None:
    """Symmetry of an operation list as written (cached: a few hundred lists cover most files);
    None when every value is ``?`` or ``.``."""
    triplets = [triplet for triplet in map(_text, raw) if triplet]
    return _from_ops([_op(triplet, tag) for triplet in triplets], tag) if triplets else None


def _raw_values(block: gemmi.cif.Block, tag: str) -> tuple[str, ...]:
    """The raw values of ``tag`` (a loop column is read in one call: its loop's flat values)."""
    column = block.find_loop(tag)
    loop = column.get_loop()
    if loop is None:
        return tuple(block.find_values(tag))
    position = [name.lower() for name in loop.tags].index(tag.lower())
    return tuple(loop.values[position :: loop.width()])


def _op_keys(rot: np.ndarray, tran: np.ndarray) -> np.ndarray:
    """One integer per operation (rotation entries in -1..1, translations in 1/DEN steps)."""
    digits = np.concatenate([(rot.reshape(-1, 9) + 1), tran % gemmi.Op.DEN], axis=1)
    weights = np.concatenate([3 ** np.arange(9), 3**9 * gemmi.Op.DEN ** np.arange(3)])
    return digits @ weights


def _text(value: str) -> str:
    return gemmi.cif.as_string(value).strip() if value not in ("?", ".") else ""


def _tag_text(block: gemmi.cif.Block, tag: str) -> str:
    value = block.find_value(tag)
    return _text(value) if value is not None else ""
