"""Graded exercises in the style of Kaggle's learntools: ``check()``, ``hint()``, ``solution()``.

In an exercise notebook::

    from tutorial_engine.book.grading import ch02

    def kv_cache_bytes_per_token(num_layers, num_kv_heads, head_dim, dtype_bytes):
        raise NotImplementedError("...")      # the learner replaces this

    ch02.kv_bytes.check(kv_cache_bytes_per_token)   # prints ✅ / ⏳ / ❌ and the first failing case
    ch02.kv_bytes.hint()
    ch02.kv_bytes.solution()

How a check works: a :class:`Task` holds a reference function and a seeded case
generator. ``check(fn)`` runs the hand-picked ``edge_cases`` and then ``num_cases``
random cases (``random.Random(seed)``, so every run sees the same ones), calls the
learner's ``fn`` and the reference on deep copies of the same keyword arguments,
compares with ``compare`` (:func:`values_match`: tensors by ``allclose``, floats by
``isclose``, containers element-wise) and stops at the first mismatch, printing its
arguments, the expected and the actual value. A stub that still raises
NotImplementedError is reported as "not attempted", any other exception as a failure
with the case that raised it. Every verdict lands in :data:`RESULTS`, which
``python -m tutorial_engine.book.grade`` reads after executing a notebook.

Adding a chapter (``grading/ch04.py`` for ``solutions/ch04_*.ipynb``):

1. Write each reference as a plain function with the signature the learner fills in;
   its source is what ``solution()`` shows, so write it as the model answer.
2. Write ``make_case(rng: random.Random) -> dict`` returning keyword arguments, and a
   few ``edge_cases`` (boundaries, and the mistakes learners make).
3. Declare ``name = Task("ch04.name", reference, make_case, hint_text, edge_cases=...)``
   and list all of them in ``TASKS``; the grade command counts a notebook's tasks
   from the module whose name is the notebook's ``chNN`` prefix.
4. In the solution notebook, tag the cell with the learner's function ``solution`` (its
   body becomes the stub) and follow it with a check cell; regenerate ``exercises/``
   with ``python -m tutorial_engine.book.exercises build``.
5. Test every task both ways (``tests/test_grading.py`` shows how): ``task.run`` passes
   on the reference, is "not attempted" on a stub and "failed" on a known-wrong answer.
"""

from .task import FAILED, NOT_ATTEMPTED, PASSED, RESULTS, CheckResult, Task, describe, values_match

__all__ = ["CheckResult", "FAILED", "NOT_ATTEMPTED", "PASSED", "RESULTS", "Task", "describe", "values_match"]
