"""The checkpoint ``generate`` and ``serve`` use when ``--model`` is not given."""

from __future__ import annotations

from pathlib import Path

DEFAULT_STORIES = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "stories260K"


def default_model() -> str:
    """stories260K when ``../shared`` sits beside the checkout, else the package's own
    small trained model (``tutorial_engine/book/models/tiny-qwen3-pydoc``)."""
    if (DEFAULT_STORIES / "config.json").is_file():
        return str(DEFAULT_STORIES)
    from .book.notebook import TRAINED_MODEL

    return str(TRAINED_MODEL)
