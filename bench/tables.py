"""What every benchmark does with its result table: print it, and append it to ``--out``."""

from __future__ import annotations


def emit_table(table: str, out: str | None) -> None:
    """Print the Markdown ``table`` and append it to the file ``out`` when one is given
    (``run_all.py`` passes ``bench/results.md``'s temporary copy)."""
    print(table)
    if out:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(table + "\n")
