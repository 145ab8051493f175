"""Helpers the book's notebooks share: which checkpoint to run, measured GPU results,
and showing engine source so the text never drifts from the code."""

from __future__ import annotations

import inspect
import json
import os
import textwrap
from pathlib import Path

MODEL_ENV = "TUTORIAL_ENGINE_MODEL"
DATA_DIR = Path(__file__).resolve().parents[2] / "book" / "data"
# A 0.9M-parameter Qwen3-layout model trained on Python's own help texts; it ships
# with the package (made by ``python -m tutorial_engine.book.train_tiny``).
TRAINED_MODEL = Path(__file__).resolve().parent / "models" / "tiny-qwen3-pydoc"


def model_path() -> str:
    """The checkpoint notebooks use: ``$TUTORIAL_ENGINE_MODEL`` (e.g. a local download
    of Qwen3-0.6B on a GPU box) or, by default, the package's small trained model."""
    return os.environ.get(MODEL_ENV) or str(TRAINED_MODEL)


def load_result(name: str) -> dict:
    """A measured result committed under ``book/data/NAME.json``.

    Raises FileNotFoundError naming the benchmark command's output it expected.
    """
    path = DATA_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run the GPU measurement that writes it (see the chapter).")
    return json.loads(path.read_text())


PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class SourceListing:
    """Engine source as the book shows it: a caption naming the file and its line range
    (so a reader can find it in the package), then the code, dedented and highlighted.
    In the HTML book the code scrolls sideways instead of wrapping (``_static/book.css``)."""

    def __init__(self, obj) -> None:
        obj = inspect.unwrap(obj)  # a decorated function: the file and lines of the function itself
        lines, start = inspect.getsourcelines(obj)
        path = Path(inspect.getsourcefile(obj)).resolve()
        try:
            path = path.relative_to(PACKAGE_ROOT)
        except ValueError:  # installed elsewhere: name it from the package down
            parts = path.parts
            path = Path(*parts[parts.index("tutorial_engine"):]) if "tutorial_engine" in parts else path
        self.path = path.as_posix()
        self.first, self.last = start, start + len(lines) - 1
        self.code = textwrap.dedent("".join(lines))

    @property
    def caption(self) -> str:
        return f"{self.path}, lines {self.first}–{self.last}"

    def __repr__(self) -> str:
        return f"# {self.caption}\n{self.code}"

    def _repr_html_(self) -> str:
        import html

        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        code = highlight(self.code, PythonLexer(), HtmlFormatter(cssclass="highlight"))
        return (f'<div class="source-listing"><div class="source-listing-caption">'
                f"{html.escape(self.caption)}</div>{code}</div>")


def show_source(obj) -> SourceListing:
    """Display the source of an engine function or class, syntax highlighted, under a
    caption with its file and line range."""
    return SourceListing(obj)
