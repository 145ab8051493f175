"""Helpers the book's notebooks share: which checkpoint to run, measured GPU results,
and showing engine source so the text never drifts from the code."""

from __future__ import annotations

import inspect
import json
import os
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


def show_source(obj) -> "object":
    """Display the source of an engine function or class, syntax highlighted."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")
