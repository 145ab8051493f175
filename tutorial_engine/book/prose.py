"""Find measured figures typed by hand in the book's prose.

Every measured number in a chapter's text is pasted from the cell that computes it
(myst-nb's ``glue`` and the ``{glue:text}`` role), so text and data cannot disagree.
This module finds the ones that are not: a number followed by a unit (ms, s, µs,
tok/s, GiB, MB, %, x, ...) in a markdown cell, outside a glue role, a fenced code
block or an inline code span. Figures quoted from papers and projects are typed by
hand on purpose; the caller passes them as an allow-list of phrases, each with its
source.

``python -m tutorial_engine.book.prose`` prints every hand-typed figure per chapter of
``_toc.yml``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_NUM = r"[~≈<>≤≥+−-]?\d[\d,]*(?:\.\d+)?"
# Longest units first, so "tok/s" is not read as "tok" and "ms" not as "m" + "s".
_UNITS = (
    r"tokens per second|tokens/s|tok/s|TFLOP/s|TFLOPs?|TB/s|GB/s|GiB|MiB|KiB|GB|MB|kB|KB|TB|"
    r"seconds?|minutes?|min|ms|µs|us|ns|s|%|×|x"
)
FIGURE = re.compile(
    rf"(?<![\w.$]){_NUM}(?:\s?[–-]\s?{_NUM})?\s?(?:{_UNITS})(?![\w/])",
)
_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_GLUE = re.compile(r"\{glue(?::\w+)?\}`[^`]*`")
_CODE = re.compile(r"`[^`\n]*`")
_LINK_TARGET = re.compile(r"\]\([^)]*\)")


def strip_markdown(text: str) -> str:
    """The prose of a markdown cell with glue roles, code and link targets removed."""
    for pattern in (_FENCE, _GLUE, _CODE, _LINK_TARGET):
        text = pattern.sub(" ", text)
    return text


def _toc_files(root: Path) -> list[str]:
    """Every file ``_toc.yml`` names, in its order: the root, then each part's chapters."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    return [toc["root"]] + [entry.get("file", "") for part in toc.get("parts", [])
                            for entry in part.get("chapters", [])]


def toc_chapters(root: Path = ROOT) -> list[Path]:
    """The notebooks under ``book/`` that ``_toc.yml`` lists, in its order."""
    return [root / f"{file}.ipynb" for file in _toc_files(root)
            if file.startswith("book/") and (root / f"{file}.ipynb").is_file()]


def reference_pages(root: Path = ROOT) -> list[Path]:
    """The book's markdown pages that ``_toc.yml`` lists: the root (introduction), claims,
    GPU page, glossary, notation."""
    return [root / f"{file}.md" for file in _toc_files(root) if (root / f"{file}.md").is_file()]


def markdown_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c["cell_type"] == "markdown"]


def hand_typed_figures(text: str, allowed: Iterable[str] = ()) -> list[str]:
    """The figures in markdown ``text`` outside glue roles, code and ``allowed`` phrases."""
    text = strip_markdown(text)
    for phrase in sorted(allowed, key=len, reverse=True):
        text = text.replace(phrase, " ")
    return [m.group(0).strip() for m in FIGURE.finditer(text)]


def check_notebook(notebook: Path, allowed: Iterable[str] = ()) -> list[tuple[int, str]]:
    """(markdown cell number, figure) for each hand-typed figure in ``notebook``."""
    allowed = list(allowed)
    return [(i, fig) for i, text in enumerate(markdown_cells(notebook))
            for fig in hand_typed_figures(text, allowed)]


def check_markdown(page: Path, allowed: Iterable[str] = ()) -> list[tuple[int, str]]:
    """(line number, figure) for each hand-typed figure in the markdown ``page``; a figure
    is reported at the first line of its paragraph (a phrase may wrap across lines)."""
    allowed = list(allowed)
    text = _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), page.read_text())  # keep line numbers
    found, line = [], 1
    for paragraph in re.split(r"(\n\s*\n)", text):
        if paragraph.strip():
            start = line + len(paragraph) - len(paragraph.lstrip("\n"))
            found += [(start, fig) for fig in hand_typed_figures(paragraph, allowed)]
        line += paragraph.count("\n")
    return found


def report(chapters: Iterable[Path], allowed: Mapping[str, str] | Iterable[str] = ()) -> int:
    total = 0
    for path in chapters:
        found = check_notebook(path, allowed)
        total += len(found)
        print(f"{path.name}: {len(found)}")
        for cell, fig in found:
            print(f"    markdown cell {cell}: {fig}")
    print(f"total: {total}")
    return total


if __name__ == "__main__":
    report([Path(p) for p in sys.argv[1:]] or toc_chapters())
