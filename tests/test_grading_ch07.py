"""Chapter 7's graded tasks, both ways, and their model against the H200 measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tutorial_engine.book.grading import ch07

from grading_both_ways import assert_graded_both_ways


def _plain_always(cpu_ms, gpu_ms, overlap):
    return cpu_ms + gpu_ms


def _sum_halved(cpu_ms, gpu_ms, overlap):  # "overlap halves the step"
    return (cpu_ms + gpu_ms) / (2 if overlap else 1)


def _per_step_not_per_token(batch_size, cpu_ms, gpu_ms, overlap):
    return 1000 / ch07.step_time_ms(cpu_ms, gpu_ms, overlap)


def _seconds_not_ms(batch_size, cpu_ms, gpu_ms, overlap):
    return batch_size / ch07.step_time_ms(cpu_ms, gpu_ms, overlap)


def _inverted(cpu_ms, gpu_ms):
    return 1 / ch07.overlap_speedup(cpu_ms, gpu_ms)


def _cpu_share(cpu_ms, gpu_ms):  # the CPU share of a plain step, not a speed-up
    return 1 + cpu_ms / (cpu_ms + gpu_ms)


WRONG = {
    "ch07.step_time": [_plain_always, _sum_halved],
    "ch07.throughput": [_per_step_not_per_token, _seconds_not_ms],
    "ch07.speedup": [_inverted, _cpu_share],
}


def test_every_task_has_known_wrong_answers():
    assert {task.name for task in ch07.TASKS} == set(WRONG)


@pytest.mark.parametrize("task", ch07.TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


def test_model_brackets_the_h200_measurement():
    """The measured overlapped step is no faster than the model's max(CPU, GPU) bound
    and the plain step no slower than CPU + GPU would allow, within 10%."""
    data = json.loads((Path(__file__).resolve().parents[1] / "book/data/overlap_scheduling_h200.json").read_text())
    off, on = data["rounds"]["off"][0]["steps"], data["rounds"]["on"][0]["steps"]
    cpu = sum(off[f"decode_{part}_ms"] for part in ("schedule", "plan", "prepare", "update"))
    gpu = off["decode_step_ms"] - cpu  # what the plain loop spends beyond its measured host parts
    assert on["decode_step_ms"] >= 0.9 * ch07.step_time_ms(cpu, gpu, True)
    assert on["decode_step_ms"] < off["decode_step_ms"]
