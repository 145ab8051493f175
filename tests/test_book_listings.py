"""Source listings a reader can follow: each names its file and line range, and keeps
Python's indentation (the HTML scrolls sideways instead of wrapping, _static/book.css)."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from tutorial_engine.book import show_source
from tutorial_engine.book.prose import toc_chapters
from tutorial_engine.scheduler import Scheduler

CAPTION = re.compile(r'class="source-listing-caption">(tutorial_engine/[\w/]+\.py), lines (\d+)–(\d+)</div>')
ROOT = Path(__file__).resolve().parents[1]


def test_listing_names_file_and_lines():
    listing = show_source(Scheduler.schedule)
    lines, start = inspect.getsourcelines(Scheduler.schedule)
    match = CAPTION.search(listing._repr_html_())
    assert match, "the listing has no caption naming its file and lines"
    path, first, last = match.group(1), int(match.group(2)), int(match.group(3))
    assert path == "tutorial_engine/scheduler.py"
    assert (first, last) == (start, start + len(lines) - 1)
    source = (ROOT / path).read_text().splitlines()[first - 1:last]
    assert source[0].strip().startswith("def schedule")
    assert repr(listing).startswith(f"# {path}, lines {first}–{last}\n")
    assert listing.code.startswith("def schedule")  # dedented: a method starts at column 0


def test_listing_scrolls_instead_of_wrapping():
    css = (ROOT / "_static" / "book.css").read_text()
    rule = re.search(r"\.source-listing pre \{([^}]*)\}", css)
    assert rule and "white-space: pre;" in rule.group(1) and "overflow-x: auto" in rule.group(1)


def listing_problems(notebook: Path) -> list[str]:
    """Stored show_source outputs that do not name their file and lines."""
    problems = []
    for index, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        source = "".join(cell["source"]).strip()
        if cell["cell_type"] != "code" or "show_source(" not in source.splitlines()[-1]:
            continue
        html = [o["data"].get("text/html", "") for o in cell.get("outputs", []) if "data" in o]
        html = ["".join(h) if isinstance(h, list) else h for h in html]
        if not any(CAPTION.search(h) for h in html):
            problems.append(f"cell {index}: a source listing without its file and lines")
    return problems


CHAPTERS = toc_chapters()
# TEMPORARY: chapters another session is rewriting; their listings get captions when they are
# next executed. Remove the entry then.
TEMPORARY_UNCAPTIONED: set[str] = set()


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_stored_listings_name_file_and_lines(chapter: Path):
    if chapter.name in TEMPORARY_UNCAPTIONED:
        pytest.skip("temporarily exempt: chapter being rewritten elsewhere")
    assert not listing_problems(chapter), listing_problems(chapter)


def test_planted_listing_without_caption_fails(tmp_path: Path):
    old_style = '<div class="highlight"><pre><span class="k">def</span> schedule(self):</pre></div>'
    cell = {"cell_type": "code", "id": "c", "execution_count": 1, "metadata": {},
            "source": ["show_source(Scheduler.schedule)"],
            "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                         "data": {"text/html": old_style, "text/plain": "def schedule(self):"}}]}
    path = tmp_path / "planted.ipynb"
    path.write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert listing_problems(path) == ["cell 0: a source listing without its file and lines"]


def test_decorated_function_names_its_own_file():
    from tutorial_engine.model_runner import ModelRunner

    assert show_source(ModelRunner.run_model).path == "tutorial_engine/model_runner.py"
