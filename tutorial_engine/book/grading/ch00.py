"""Chapter 0 tasks: the two numbers every serving benchmark reports.

Definitions follow vLLM's serving benchmark (``benchmarks/benchmark_serving.py``):
output throughput is generated tokens over wall time; TPOT (time per output token)
is, per request, the time after the first token divided by the tokens after the
first, then averaged over requests (requests with one output token have no TPOT).
"""

from __future__ import annotations

import random

from .task import Task


def output_throughput(outputs: list[dict], elapsed_s: float) -> float:
    """Generated tokens per second over the whole run (nano-vLLM's ``bench.py`` number)."""
    return sum(len(out["token_ids"]) for out in outputs) / elapsed_s


def mean_tpot(outputs: list[dict]) -> float:
    """Mean over requests of each request's mean inter-token latency, in seconds;
    0.0 when no request produced two tokens."""
    per_request = [sum(out["itl"]) / len(out["itl"]) for out in outputs if out["itl"]]
    return sum(per_request) / len(per_request) if per_request else 0.0


def _fake_output(rng: random.Random, num_tokens: int) -> dict:
    """The fields of an ``LLM.generate`` output that these tasks read."""
    return {
        "token_ids": [rng.randrange(512) for _ in range(num_tokens)],
        "ttft": round(rng.uniform(0.01, 0.5), 4),
        "itl": [round(rng.uniform(0.001, 0.05), 4) for _ in range(num_tokens - 1)],
    }


def _outputs_case(rng: random.Random) -> dict:
    return {"outputs": [_fake_output(rng, rng.randint(1, 40)) for _ in range(rng.randint(1, 8))]}


def _throughput_case(rng: random.Random) -> dict:
    return {**_outputs_case(rng), "elapsed_s": round(rng.uniform(0.1, 20.0), 3)}


_rng = random.Random(1)
_uneven = [_fake_output(_rng, 2), _fake_output(_rng, 30)]  # pooling all gaps instead would weight the long one

throughput = Task(
    "ch00.throughput", output_throughput, _throughput_case,
    hint_text="Count the tokens in every output's 'token_ids' (prompts do not count), then divide by the time.",
    edge_cases=[{"outputs": [_fake_output(_rng, 1)], "elapsed_s": 0.5}],
)

tpot = Task(
    "ch00.tpot", mean_tpot, _outputs_case,
    hint_text="Average each request's 'itl' list first, then average those per-request means; "
              "skip requests whose 'itl' is empty, and return 0.0 if all are.",
    edge_cases=[{"outputs": _uneven}, {"outputs": [_fake_output(_rng, 1)]}],
)

TASKS = [throughput, tpot]
