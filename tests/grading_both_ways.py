"""The one assertion every graded task must pass, shared by the chapters' grading tests."""

from __future__ import annotations

from tutorial_engine.book.grading import FAILED, NOT_ATTEMPTED, PASSED, Task


def _stub(*args, **kwargs):
    raise NotImplementedError("Your code here")


def assert_graded_both_ways(task: Task, wrong_answers: list) -> None:
    """The reference passes every case; a stub that still raises NotImplementedError
    is "not attempted"; each known-wrong answer fails, showing the expected value."""
    result = task.run(task.reference)
    assert result.status == PASSED, result.message
    assert result.num_cases == len(task.edge_cases) + task.num_cases
    result = task.run(_stub)
    assert result.status == NOT_ATTEMPTED and not result.passed and "not attempted" in result.message
    assert wrong_answers, f"{task.name} has no known-wrong answers to fail"
    for wrong in wrong_answers:
        result = task.run(wrong)
        name = getattr(wrong, "__name__", "a known-wrong answer")
        assert result.status == FAILED, f"{task.name} accepted {name}"
        assert "wrong answer" in result.message and "expected" in result.message, result.message
