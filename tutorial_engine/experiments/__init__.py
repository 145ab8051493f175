"""Measurement commands whose JSON results the book plots (run them on a GPU)."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(result: dict, path: Path) -> None:
    """Write ``result`` to ``path`` (folders created); called after every stage, so a
    run cut short by a time limit keeps what it measured."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


def triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__
