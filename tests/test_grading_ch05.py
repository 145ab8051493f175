"""Chapter 5's graded tasks, both ways (the reference passes; a stub is "not
attempted"; known-wrong schedules fail), and the references agree with the
engine's real scheduler, so the exercise teaches what the engine does."""

from __future__ import annotations

import random

import pytest

from tutorial_engine import SamplingParams
from tutorial_engine.block_manager import KVCacheManager
from tutorial_engine.book.grading import ch05
from tutorial_engine.scheduler import Scheduler, SchedulerConfig
from tutorial_engine.sequence import Sequence

from grading_both_ways import assert_graded_both_ways


def _prefill_first(prompt_lens, output_lens, budget):
    """Waiting prompts before running decodes: the stall chunked prefill removes."""
    computed, produced = [0] * len(prompt_lens), [0] * len(prompt_lens)
    waiting, running, steps = list(range(len(prompt_lens))), [], []
    while waiting or running:
        left, step = budget, []
        for i in waiting + running:
            if left == 0:
                break
            todo = prompt_lens[i] + produced[i] - computed[i]
            step.append((i, min(todo, left)))
            left -= min(todo, left)
        for i, n in step:
            if i in waiting:
                waiting.remove(i)
                running.append(i)
            computed[i] += n
            if computed[i] == prompt_lens[i] + produced[i]:
                produced[i] += 1
                if produced[i] == output_lens[i]:
                    running.remove(i)
        steps.append(step)
    return steps


def _partial_chunks_sample(prompt_lens, output_lens, budget):
    """Every scheduled request gets a token, even for a partial chunk."""
    computed, produced = [0] * len(prompt_lens), [0] * len(prompt_lens)
    waiting, running, steps = list(range(len(prompt_lens))), [], []
    while waiting or running:
        left, step = budget, []
        for i in running + waiting:
            if left == 0:
                break
            todo = max(1, prompt_lens[i] + produced[i] - computed[i])
            step.append((i, min(todo, left)))
            left -= min(todo, left)
        for i, n in step:
            if i in waiting:
                waiting.remove(i)
                running.append(i)
            computed[i] += n
            produced[i] += 1
            if produced[i] >= output_lens[i]:
                running.remove(i)
        steps.append(step)
    return steps


def _whole_prompts_over_budget(prompt_lens, output_lens, budget):
    """Never splits a prompt: the step takes it whole, over the budget."""
    return ch05.unchunked_schedule(prompt_lens, output_lens, max(budget, max(prompt_lens)))


def _decodes_join_prefill(prompt_lens, output_lens, budget):
    """Lets running decodes fill a prefill step's leftover budget."""
    produced = [0] * len(prompt_lens)
    waiting, running, steps = list(range(len(prompt_lens))), [], []
    while waiting or running:
        left, step = budget, []
        for i in list(running):
            if left:
                step.append((i, 1))
                left -= 1
        while waiting and prompt_lens[waiting[0]] <= left:
            i = waiting.pop(0)
            step.append((i, prompt_lens[i]))
            left -= prompt_lens[i]
            running.append(i)
        for i, _ in step:
            produced[i] += 1
            if produced[i] == output_lens[i]:
                running.remove(i)
        steps.append(step)
    return steps


def _skips_prompts_that_do_not_fit(prompt_lens, output_lens, budget):
    """Admits a later, shorter prompt past one that does not fit (not first-come first-served)."""
    produced = [0] * len(prompt_lens)
    waiting, running, steps = list(range(len(prompt_lens))), [], []
    while waiting or running:
        left, step = budget, []
        for i in list(waiting):
            if prompt_lens[i] <= left:
                waiting.remove(i)
                step.append((i, prompt_lens[i]))
                left -= prompt_lens[i]
                running.append(i)
        if not step:
            step = [(i, 1) for i in running[:budget]]
        for i, _ in step:
            produced[i] += 1
            if produced[i] == output_lens[i]:
                running.remove(i)
        steps.append(step)
    return steps


WRONG = {
    "ch05.schedule": [_prefill_first, _partial_chunks_sample, _whole_prompts_over_budget],
    "ch05.unchunked": [_decodes_join_prefill, _skips_prompts_that_do_not_fit,
                       lambda prompt_lens, output_lens, budget: ch05.chunked_prefill_schedule(
                           prompt_lens, output_lens, budget)],
}


def test_every_task_has_known_wrong_answers():
    assert {task.name for task in ch05.TASKS} == set(WRONG)


@pytest.mark.parametrize("task", ch05.TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


def engine_schedule(model_dir, prompt_lens, output_lens, budget, chunked) -> list[list[tuple[int, int]]]:
    """What tutorial_engine's Scheduler plans for the same queue (ample slots and pages)."""
    config = SchedulerConfig(max_num_seqs=64, max_num_batched_tokens=budget, max_model_len=4096,
                             enable_chunked_prefill=chunked)
    scheduler = Scheduler(config, KVCacheManager(256, 16), eos_token_ids=set())
    for i, (p, m) in enumerate(zip(prompt_lens, output_lens)):
        scheduler.add(Sequence(i, [5] * p, SamplingParams(max_tokens=m, ignore_eos=True)))
    steps = []
    while scheduler.has_unfinished():
        out = scheduler.schedule()
        steps.append([(s.seq.seq_id, s.num_new_tokens) for s in out.scheduled])
        scheduler.update_from_output(out, [7] * sum(s.will_sample for s in out.scheduled))
    return steps


@pytest.mark.parametrize("chunked", [True, False])
def test_references_match_the_engine_scheduler(tiny_checkpoints, chunked):
    task = ch05.schedule if chunked else ch05.unchunked
    rng = random.Random(5)
    cases = list(task.edge_cases) + [task.make_case(rng) for _ in range(60)]
    for case in cases:
        expected = engine_schedule(tiny_checkpoints["qwen3"], chunked=chunked, **case)
        assert [list(map(tuple, step)) for step in task.reference(**case)] == expected, case
