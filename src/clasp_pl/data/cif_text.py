"""CIF text before it is parsed: bytes decoded with fallbacks, lenient syntax repaired, values
cleaned."""

from __future__ import annotations

import re
from pathlib import Path

import gemmi

from clasp_pl.data.rejects import CifError

FALLBACK_ENCODINGS = ("cp1252", "latin-1")

_WS = re.compile(r"\s+")
_OPEN_QUOTE = re.compile(r"^(\s*_\S+\s+)(['\"])(.*)$")
_BARE_TAG = re.compile(r"^\s*_\S+\s*$")


def decode_cif_bytes(data: bytes) -> tuple[str, str]:
    """Decode CIF bytes: UTF-8 (a byte-order mark is dropped), else cp1252, else latin-1.

    Returns:
        ``(text, encoding)``.
    """
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    for encoding in FALLBACK_ENCODINGS:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte")


def clean_text(value: str | None) -> str:
    """Strip surrounding whitespace and quotes, and collapse inner whitespace and newlines."""
    if value is None:
        return ""
    value = _WS.sub(" ", value).strip()
    while len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1].strip()
    return "" if value in ("?", ".") else value


def read_cif_text(path: str | Path) -> tuple[str, str]:
    """The text of a CIF file and the encoding it was decoded with.

    Raises:
        CifError: ``unreadable`` when the file cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise CifError("unreadable", f"{path}: {err.strerror}") from None
    return decode_cif_bytes(data)


def read_document(text: str, name: str, required: bool) -> tuple[gemmi.cif.Document | None, bool]:
    """The gemmi document of ``text`` and whether quotes were repaired; None when gemmi cannot
    read it and it is not ``required`` (the pymatgen reader then reads the file alone)."""
    try:
        return gemmi.cif.read_string(text), False
    except (RuntimeError, ValueError) as err:
        error = err
    lenient = any(symptom in str(error) for symptom in ("unterminated", "has no value"))
    repaired = repair_lenient_syntax(text) if lenient else None
    if repaired is not None:
        try:
            return gemmi.cif.read_string(repaired), True
        except (RuntimeError, ValueError):
            pass
    if required:
        raise CifError("unparseable", f"{name}: {first_line(error)}") from None
    return None, False


def repair_lenient_syntax(text: str) -> str | None:
    """Repair two departures from CIF 1.1 that pymatgen tolerates (Crystallographica output):
    ``_tag 'value`` values that run over several lines become ``;`` text fields, and a tag
    without a value on the last line (``_eof``) is dropped.

    Returns:
        The repaired text, or None when there was nothing to repair.
    """
    lines = text.splitlines()
    out: list[str] = []
    changed = False
    index = 0
    while index < len(lines):
        match = _OPEN_QUOTE.match(lines[index])
        if match is None or _closes(match.group(3), match.group(2)):
            out.append(lines[index])
            index += 1
            continue
        tag, quote, first = match.groups()
        body = [first]
        end = index + 1
        while end < len(lines) and not lines[end].rstrip().endswith(quote):
            body.append(lines[end])
            end += 1
        if end == len(lines):
            return None
        body.append(lines[end].rstrip()[:-1])
        out += [tag.rstrip(), ";", *(" " + line if line.startswith(";") else line for line in body)]
        out.append(";")
        changed = True
        index = end + 1
    content = [
        k for k, line in enumerate(out) if line.strip() and not line.lstrip().startswith("#")
    ]
    if content and _BARE_TAG.match(out[content[-1]]):
        del out[content[-1]]
        changed = True
    return "\n".join(out) + "\n" if changed else None


def _closes(rest: str, quote: str) -> bool:
    """Whether a quoted value that started with ``quote`` ends on this line (``rest``)."""
    return re.search(re.escape(quote) + r"(?:\s|$)", rest) is not None


def first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
