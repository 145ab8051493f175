"""Type checks for settings, shared by ``SamplingParams`` and ``EngineConfig``.

Python lets ``max_tokens=2.5`` or ``enable_chunked_prefill="no"`` through silently;
these helpers turn such values into an error that names the field and the value,
before any work starts. numpy scalars are accepted and converted to Python ones
(they are what array code produces); bools are never numbers here (``True`` is not 1).
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def show(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_int(name: str, value: object) -> int:
    """``value`` as a Python int. Raises TypeError for bools, floats and non-numbers."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    raise TypeError(f"{name}={show(value)} has type {type(value).__name__}; {name} must be an int.")


def as_float(name: str, value: object) -> float:
    """``value`` as a finite Python float.

    Raises:
        TypeError: for bools and non-numbers.
        ValueError: for NaN and infinities.
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name}={show(value)} has type {type(value).__name__}; {name} must be a number.")
    if not math.isfinite(value):
        raise ValueError(f"{name}={value} is not a finite number; pass a finite {name}.")
    return float(value)


def as_bool(name: str, value: object) -> bool:
    """``value`` as a Python bool. Raises TypeError for anything else (``"no"`` is not False)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}={show(value)} has type {type(value).__name__}; {name} must be True or False.")
