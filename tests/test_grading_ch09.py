"""Chapter 9's graded tasks, both ways, their models against the H200 serving run, and
the solution notebook's prose: measured figures glued, and only in answers (the book
shows the exercise notebook unexecuted, so a glue role there would name a missing key)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import pytest

from tutorial_engine.book.grading import ch09
from tutorial_engine.book.prose import check_notebook

from grading_both_ways import assert_graded_both_ways

ROOT = Path(__file__).resolve().parents[1]


def _rate_over_latency(arrival_rate, mean_latency_s):
    return arrival_rate / mean_latency_s


def _latency_over_rate(arrival_rate, mean_latency_s):
    return mean_latency_s / arrival_rate if arrival_rate else 0.0


def _latency_in_ms(arrival_rate, mean_latency_s):
    return arrival_rate * mean_latency_s * 1000


def _moments(prompt_lens, prefill_tok_s):
    service = [n / prefill_tok_s for n in prompt_lens]
    return sum(service) / len(service), sum(s * s for s in service) / len(service)


def _mm1(arrival_rate, prompt_lens, prefill_tok_s):  # exponential service: W_q = ρ E[S] / (1 − ρ)
    mean_s, _ = _moments(prompt_lens, prefill_tok_s)
    rho = arrival_rate * mean_s
    return (rho, math.inf) if rho >= 1 else (rho, rho * mean_s / (1 - rho) + mean_s)


def _md1_on_the_mean(arrival_rate, prompt_lens, prefill_tok_s):  # E[S]² where E[S²] belongs
    mean_s, _ = _moments(prompt_lens, prefill_tok_s)
    rho = arrival_rate * mean_s
    return (rho, math.inf) if rho >= 1 else (rho, arrival_rate * mean_s**2 / (2 * (1 - rho)) + mean_s)


def _wait_only(arrival_rate, prompt_lens, prefill_tok_s):  # forgets the request's own prefill
    mean_s, mean_s2 = _moments(prompt_lens, prefill_tok_s)
    rho = arrival_rate * mean_s
    return (rho, math.inf) if rho >= 1 else (rho, arrival_rate * mean_s2 / (2 * (1 - rho)))


def _no_overload(arrival_rate, prompt_lens, prefill_tok_s):  # the formula past saturation
    mean_s, mean_s2 = _moments(prompt_lens, prefill_tok_s)
    rho = arrival_rate * mean_s
    return rho, arrival_rate * mean_s2 / (2 * (1 - rho)) + mean_s


def _decode_only(mean_prompt_len, mean_output_len, prefill_tok_s, decode_step_s, batch_size):
    return batch_size / decode_step_s


def _unbatched(mean_prompt_len, mean_output_len, prefill_tok_s, decode_step_s, batch_size):
    return mean_output_len / (mean_prompt_len / prefill_tok_s + mean_output_len * decode_step_s)


def _requests_not_tokens(mean_prompt_len, mean_output_len, prefill_tok_s, decode_step_s, batch_size):
    return 1 / (mean_prompt_len / prefill_tok_s + mean_output_len * decode_step_s / batch_size)


WRONG = {
    "ch09.little": [_rate_over_latency, _latency_over_rate, _latency_in_ms],
    "ch09.ttft": [_mm1, _md1_on_the_mean, _wait_only, _no_overload],
    "ch09.saturation": [_decode_only, _unbatched, _requests_not_tokens],
}


def test_every_task_has_known_wrong_answers():
    assert {task.name for task in ch09.TASKS} == set(WRONG)


@pytest.mark.parametrize("task", ch09.TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


def test_random_cases_cover_both_sides_of_saturation():
    rng_cases = list(ch09.ttft.cases())[len(ch09.ttft.edge_cases):]
    overloaded = [case for case in rng_cases if math.isinf(ch09.prefill_queue(**case)[1])]
    assert 0 < len(overloaded) < len(rng_cases) / 2


def test_prefill_queue_matches_the_textbook_cases():
    """M/D/1 at ρ = 1/2 waits E[S]/2; at λ -> 0 the TTFT is the mean prefill."""
    assert ch09.prefill_queue(0.5, [1000], 1000.0) == (0.5, 1.5)
    assert ch09.prefill_queue(0.0, [1000, 3000], 1000.0) == (0.0, 2.0)


def test_saturation_model_is_within_a_factor_two_of_the_h200_run():
    """The saturation estimate from the H200 step fit and the measured peak output
    throughput agree within a factor of two (the model has no host gaps: it is higher)."""
    from tutorial_engine.sim.timing import StepFeatures, StepTimeModel

    data = json.loads((ROOT / "book/data/serving_h200.json").read_text())
    rows = [row for row in data["runs"][0]["requests"]]
    prompt = sum(r[0] for r in rows) / len(rows)
    output = sum(r[1] for r in rows) / len(rows)
    steps = StepTimeModel.load()
    batch = 256
    decode_s = steps.step_time(StepFeatures(batch, batch, round(batch * (prompt + output / 2))))
    predicted = ch09.saturation_output_tok_s(prompt, output, steps.prefill_tok_s, decode_s, batch)
    measured = max(run["output_throughput"] for run in data["runs"])
    assert measured < predicted < 2 * measured


SOLUTION = ROOT / "solutions/ch09_serving.ipynb"
EXERCISE = ROOT / "exercises/ch09_serving.ipynb"


@pytest.mark.parametrize("path", [SOLUTION, EXERCISE], ids=["solution", "exercise"])
def test_no_hand_typed_figures(path):
    assert check_notebook(path, {}) == []


def test_glue_roles_only_in_answers():
    for cell in nbformat.read(SOLUTION, as_version=4).cells:
        if cell.cell_type == "markdown" and "{glue" in cell.source:
            assert "solution" in cell.metadata.get("tags", []), cell.source[:80]
