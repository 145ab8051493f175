"""Chapter 5 tasks: schedule a queue by hand, with and without chunked prefill.

Both policies are the engine's (``tutorial_engine/scheduler.py``) with unlimited
batch slots and KV pages, and every request queued before step 1:

- chunked (Sarathi-Serve's stall-free batching, Agrawal et al., OSDI 2024): running
  requests first, in admission order, a decode taking 1 token and an unfinished
  prompt ``min(rest, budget left)``; then waiting prompts in arrival order with what
  is left, the last one admitted possibly as a partial chunk;
- unchunked (nano-vLLM, vLLM before chunked prefill): if the first waiting prompt
  fits the budget whole, the step admits whole prompts in arrival order while they
  fit and runs nothing else; otherwise every running request decodes, in admission
  order, while the budget lasts.

A request gets an output token in the step that computes its last prompt token and
in each of its decode steps; it leaves after ``output_lens[i]`` tokens.
``tests/test_grading_ch05.py`` checks both references against the real scheduler.
"""

from __future__ import annotations

import random

from .task import Task


def chunked_prefill_schedule(prompt_lens: list[int], output_lens: list[int], budget: int) -> list[list[tuple[int, int]]]:
    """Per step, the ``(request index, tokens)`` pairs scheduled, in scheduling order."""
    computed = [0] * len(prompt_lens)  # tokens whose K/V are in the cache
    produced = [0] * len(prompt_lens)  # output tokens so far
    waiting, running, steps = list(range(len(prompt_lens))), [], []
    while waiting or running:
        left, step = budget, []
        for i in running + waiting:
            if left == 0:
                break
            todo = prompt_lens[i] + produced[i] - computed[i]  # 1 for a decode
            step.append((i, min(todo, left)))
            left -= min(todo, left)
        for i, n in step:
            if i in waiting:
                waiting.remove(i)
                running.append(i)
            computed[i] += n
            if computed[i] == prompt_lens[i] + produced[i]:  # reached its last token: sample one
                produced[i] += 1
                if produced[i] == output_lens[i]:
                    running.remove(i)
        steps.append(step)
    return steps


def unchunked_schedule(prompt_lens: list[int], output_lens: list[int], budget: int) -> list[list[tuple[int, int]]]:
    """The same, with prefill-only or decode-only steps and whole prompts
    (``budget >= max(prompt_lens)``)."""
    produced = [0] * len(prompt_lens)
    waiting, running, steps = list(range(len(prompt_lens))), [], []
    while waiting or running:
        left, step = budget, []
        while waiting and prompt_lens[waiting[0]] <= left:  # prefill step: whole prompts only
            i = waiting.pop(0)
            step.append((i, prompt_lens[i]))
            left -= prompt_lens[i]
            running.append(i)
        if not step:  # decode step
            step = [(i, 1) for i in running[:budget]]
        for i, _ in step:
            produced[i] += 1
            if produced[i] == output_lens[i]:
                running.remove(i)
        steps.append(step)
    return steps


def _case(rng: random.Random) -> dict:
    n = rng.randint(1, 6)
    prompt_lens = [rng.randint(1, 40) for _ in range(n)]
    return {"prompt_lens": prompt_lens, "output_lens": [rng.randint(1, 6) for _ in range(n)],
            "budget": rng.randint(1, 24)}


def _unchunked_case(rng: random.Random) -> dict:
    case = _case(rng)
    case["budget"] = rng.randint(max(case["prompt_lens"]), max(case["prompt_lens"]) + 30)
    return case


_edges = [
    {"prompt_lens": [10, 3], "output_lens": [3, 2], "budget": 4},  # chunks 4, 4, 2 + the next prompt
    {"prompt_lens": [8], "output_lens": [1], "budget": 8},  # prompt exactly the budget, one output token
    {"prompt_lens": [2, 2, 2, 9], "output_lens": [4, 4, 4, 2], "budget": 2},  # more decodes than budget
]

schedule = Task(
    "ch05.schedule", chunked_prefill_schedule, _case,
    hint_text="Keep per request how many tokens are computed and how many were generated; a request still has "
              "prompt_len + generated - computed tokens to run (1 when it is decoding). Each step, walk the "
              "running requests (admission order) and then the waiting ones, giving each min(todo, budget left). "
              "A request samples when its computed tokens reach prompt_len + generated.",
    edge_cases=_edges,
)

unchunked = Task(
    "ch05.unchunked", unchunked_schedule, _unchunked_case,
    hint_text="A step is either prefill or decode. Admit waiting prompts whole, in order, while they fit the "
              "budget; if none was admitted, every running request decodes one token (at most budget of them). "
              "Every scheduled request gets one output token: a whole prompt reaches its last token at once.",
    edge_cases=[{**e, "budget": max(e["budget"], max(e["prompt_lens"]))} for e in _edges]
    + [{"prompt_lens": [4, 4, 4], "output_lens": [5, 1, 3], "budget": 5}],  # one prompt per prefill step
)

TASKS = [schedule, unchunked]
