"""Output that fits the page: tables as Markdown (the book renders them as HTML tables),
long sentences wrapped at 80 characters."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None):
    """A Markdown table for ``IPython.display``: one string per cell, ``align`` one
    letter per column (``l``, ``r``, ``c``; default: left for the first, right for
    the rest). Pipes inside cells are escaped."""
    from IPython.display import Markdown

    align = align or "l" + "r" * (len(header) - 1)
    rule = {"l": ":--", "r": "--:", "c": ":-:"}

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    text = "\n".join([line(header), "| " + " | ".join(rule[a] for a in align) + " |", *map(line, rows)])
    return Markdown(text)


def print_wrapped(text: str, prefix: str = "", width: int = 80) -> None:
    """Print ``text`` wrapped at ``width`` characters, later lines indented under ``prefix``."""
    print(textwrap.fill(text, width=width, initial_indent=prefix, subsequent_indent=" " * len(prefix)))
