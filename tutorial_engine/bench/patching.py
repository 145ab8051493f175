"""Replace methods of live engine objects for the duration of a measurement.

The profilers and the book's steppers observe the real engine by wrapping some of its
methods (on instances, classes or modules) and must leave it exactly as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

_MISSING = object()


@contextlib.contextmanager
def patched(replacements: list[tuple[object, str, Callable]]) -> Iterator[None]:
    """Set ``obj.name = new`` for each ``(obj, name, new)``; on exit restore what
    ``obj`` itself held, or delete the attribute so the class's method shows again."""
    saved = [(obj, name, vars(obj).get(name, _MISSING)) for obj, name, _ in replacements]
    for obj, name, new in replacements:
        setattr(obj, name, new)
    try:
        yield
    finally:
        for obj, name, previous in reversed(saved):
            if previous is _MISSING:
                delattr(obj, name)
            else:
                setattr(obj, name, previous)
