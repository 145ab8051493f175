"""The generic grader: a :class:`Task` runs a learner's function against a reference.

See the package docstring (``tutorial_engine.book.grading``) for how chapters declare tasks.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

PASSED, NOT_ATTEMPTED, FAILED = "passed", "not attempted", "failed"


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one :meth:`Task.run`.

    Attributes:
        task: the task's name, e.g. ``"ch02.admit"``.
        status: ``"passed"``, ``"not attempted"`` (the stub still raises
            NotImplementedError) or ``"failed"``.
        num_cases: cases run (all of them on a pass; up to the first failure otherwise).
        message: the human-readable verdict ``check()`` prints.
    """

    task: str
    status: str
    num_cases: int
    message: str

    @property
    def passed(self) -> bool:
        return self.status == PASSED


# Every check() verdict of this Python process, by task name (the latest wins).
# ``python -m tutorial_engine.book.grade`` reads it after running a notebook.
RESULTS: dict[str, CheckResult] = {}


def values_match(got: Any, expected: Any, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """Structural equality that tolerates float rounding.

    Tensors: same shape and ``torch.allclose(rtol, atol)``; floats: ``math.isclose``;
    lists / tuples / dicts: element by element (a list and a tuple with equal items
    match); anything else: ``==``.
    """
    if isinstance(expected, torch.Tensor):
        return (isinstance(got, torch.Tensor) and got.shape == expected.shape
                and torch.allclose(got.to(expected.dtype), expected, rtol=rtol, atol=atol))
    if isinstance(expected, float) or isinstance(got, float):
        return (isinstance(got, (int, float)) and not isinstance(got, bool)
                and math.isclose(got, expected, rel_tol=rtol, abs_tol=atol))
    if isinstance(expected, (list, tuple)):
        return (isinstance(got, (list, tuple)) and len(got) == len(expected)
                and all(values_match(g, e, rtol, atol) for g, e in zip(got, expected)))
    if isinstance(expected, dict):
        return (isinstance(got, dict) and got.keys() == expected.keys()
                and all(values_match(got[k], expected[k], rtol, atol) for k in expected))
    if isinstance(expected, bool):
        return isinstance(got, bool) and got == expected
    return got == expected


def describe(value: Any, limit: int = 160) -> str:
    """A short, readable ``repr``: tensors by shape and dtype, long reprs cut."""
    if isinstance(value, torch.Tensor):
        return f"tensor(shape={tuple(value.shape)}, dtype={str(value.dtype).removeprefix('torch.')})"
    if isinstance(value, dict):
        text = "{" + ", ".join(f"{k}={describe(v, limit)}" for k, v in value.items()) + "}"
    elif isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
        text = "[" + ", ".join(describe(v, limit) for v in value) + "]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_kwargs(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{key}={describe(value)}" for key, value in kwargs.items())


def _difference(got: Any, expected: Any) -> str:
    if isinstance(got, torch.Tensor) and isinstance(expected, torch.Tensor) and got.shape == expected.shape:
        return f"\n  max |got - expected| = {(got.double() - expected.double()).abs().max().item():.3g}"
    return ""


def _matches(compare: Callable[[Any, Any], bool], got: Any, expected: Any) -> bool:
    try:
        return bool(compare(got, expected))
    except Exception:  # e.g. a tensor compared with an int: not a match, not a crash
        return False


@dataclass
class Task:
    """One graded exercise: a reference function and the cases to compare on.

    Args:
        name: ``"chNN.task"``, unique across the book (the key in :data:`RESULTS`).
        reference: the correct implementation; its source is what :meth:`solution` shows.
        make_case: ``rng -> kwargs``: one random case, drawn from ``random.Random``.
        hint_text: what :meth:`hint` prints.
        edge_cases: hand-picked kwargs, run before the random ones (boundaries, the
            mistakes learners actually make).
        num_cases: random cases per check.
        seed: seeds the case generator, so every run sees the same cases.
        compare: ``(got, expected) -> bool``; :func:`values_match` by default.
    """

    name: str
    reference: Callable[..., Any]
    make_case: Callable[[random.Random], dict[str, Any]]
    hint_text: str
    edge_cases: Sequence[dict[str, Any]] = field(default_factory=tuple)
    num_cases: int = 30
    seed: int = 0
    compare: Callable[[Any, Any], bool] = values_match

    def cases(self) -> Iterator[dict[str, Any]]:
        """The edge cases, then ``num_cases`` seeded random ones."""
        yield from self.edge_cases
        rng = random.Random(self.seed)
        for _ in range(self.num_cases):
            yield self.make_case(rng)

    def run(self, fn: Callable[..., Any]) -> CheckResult:
        """Compare ``fn`` with the reference on every case; stop at the first mismatch.

        Each call gets its own deep copy of the arguments, so a function that mutates
        its inputs cannot change what the reference sees. Never raises on a wrong
        ``fn``: exceptions become a ``"failed"`` (or ``"not attempted"``) verdict.
        """
        if not callable(fn):
            return CheckResult(self.name, FAILED, 0, f"{self.name}: check() needs your function itself, "
                                                     f"got {describe(fn)}. Pass the function name without ().")
        count = 0
        for count, kwargs in enumerate(self.cases(), start=1):
            expected = self.reference(**copy.deepcopy(kwargs))
            try:
                got = fn(**copy.deepcopy(kwargs))
            except NotImplementedError:
                return CheckResult(self.name, NOT_ATTEMPTED, count - 1,
                                   f"{self.name}: not attempted yet. Replace the `raise NotImplementedError` "
                                   "line with your code, run that cell, then this one.")
            except Exception as error:  # the learner's bug, reported with the case that triggered it
                return CheckResult(self.name, FAILED, count,
                                   f"{self.name}: case {count} raised {type(error).__name__}: {error}\n"
                                   f"  arguments: {_describe_kwargs(kwargs)}")
            if not _matches(self.compare, got, expected):
                return CheckResult(self.name, FAILED, count,
                                   f"{self.name}: wrong answer on case {count}.\n"
                                   f"  arguments: {_describe_kwargs(kwargs)}\n"
                                   f"  expected:  {describe(expected)}\n"
                                   f"  got:       {describe(got)}{_difference(got, expected)}")
        return CheckResult(self.name, PASSED, count, f"{self.name}: correct ({count} cases match the reference).")

    def check(self, fn: Callable[..., Any]) -> None:
        """Grade ``fn``: print the verdict and record it in :data:`RESULTS`."""
        result = self.run(fn)
        RESULTS[self.name] = result
        mark = {PASSED: "✅", NOT_ATTEMPTED: "⏳", FAILED: "❌"}[result.status]
        print(f"{mark} {result.message}")

    def hint(self) -> None:
        """Print a nudge that does not give the answer away."""
        print(f"💡 {self.hint_text}")

    def solution(self) -> None:
        """Show the reference implementation's source."""
        source = inspect.getsource(self.reference)
        try:
            from IPython.display import Code, display
        except ImportError:
            print(source)
        else:
            display(Code(source, language="python"))
