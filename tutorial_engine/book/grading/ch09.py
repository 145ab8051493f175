"""Chapter 9 tasks: a server under load, from queueing theory and measured step times.

Three models, each exact for its assumptions:

* **Little's law** (any stable system, any arrival pattern, any order of service): the
  mean number of requests in the system is the arrival rate times the mean time a request
  spends in it, ``L = λ W``. Its inverse bounds a server with a concurrency cap: ``N``
  slots held ``W`` seconds each sustain at most ``N / W`` requests/s.
* **The prefill queue** as an M/G/1 queue: requests arrive as a Poisson process of rate
  ``λ`` (the benchmark's exponential gaps); one server, the GPU, serves their prefills
  first come first served, request ``i`` taking ``S_i = prompt_len_i / prefill_tok_s``
  seconds, the prompt drawn uniformly from ``prompt_lens``. Utilisation
  ``ρ = λ E[S]`` (offered prefill work per second over the GPU's one second per second);
  for ``ρ < 1`` the Pollaczek–Khinchine formula gives the mean wait in the queue,
  ``W_q = λ E[S²] / (2 (1 − ρ))``, and the mean TTFT is ``W_q + E[S]`` (the wait, then
  the request's own prefill, whose step samples the first token). For ``ρ ≥ 1`` the queue
  grows without bound: the TTFT is infinite. Decode work is left out: it is the next
  model's business.
* **Throughput at saturation**: the GPU never idles; each request costs its prefill,
  ``mean_prompt_len / prefill_tok_s``, and ``mean_output_len`` decode tokens, each a
  ``1 / batch_size`` share of a decode step of a full batch. Output tokens per second are
  ``mean_output_len`` over that time per request.

The chapter's H200 serving run is ``book/data/serving_h200.json``; the step times come
from the fit of this engine's H200 steps (``tutorial_engine.sim.timing``).
"""

from __future__ import annotations

import math
import random

from .task import Task


def requests_in_system(arrival_rate: float, mean_latency_s: float) -> float:
    """Little's law: the mean number of requests in the server (queued or running),
    given requests/s arriving and the mean seconds each spends from arrival to its
    last token."""
    return arrival_rate * mean_latency_s


def prefill_queue(arrival_rate: float, prompt_lens: list[int], prefill_tok_s: float) -> tuple[float, float]:
    """(utilisation, mean TTFT in seconds) of the prefill queue as an M/G/1 queue:
    Poisson arrivals, first come first served, service time prompt_len / prefill_tok_s
    with the prompt drawn uniformly from prompt_lens. Pollaczek–Khinchine mean wait
    plus the request's own prefill; an infinite TTFT when utilisation >= 1."""
    service = [n / prefill_tok_s for n in prompt_lens]
    mean_s = sum(service) / len(service)
    mean_s2 = sum(s * s for s in service) / len(service)
    rho = arrival_rate * mean_s
    if rho >= 1:
        return rho, math.inf
    wait = arrival_rate * mean_s2 / (2 * (1 - rho))
    return rho, wait + mean_s


def saturation_output_tok_s(mean_prompt_len: float, mean_output_len: float, prefill_tok_s: float,
                            decode_step_s: float, batch_size: int) -> float:
    """Output tokens/s of a GPU that never idles: each request costs its prefill and
    its output tokens, each a 1/batch_size share of a full batch's decode step."""
    gpu_s_per_request = mean_prompt_len / prefill_tok_s + mean_output_len * decode_step_s / batch_size
    return mean_output_len / gpu_s_per_request


def _little_case(rng: random.Random) -> dict:
    return {"arrival_rate": round(rng.uniform(0.1, 200), 3), "mean_latency_s": round(rng.uniform(0.01, 30), 4)}


def _queue_case(rng: random.Random) -> dict:
    prompt_lens = [rng.randint(16, 4096) for _ in range(rng.randint(1, 20))]
    prefill_tok_s = round(rng.uniform(2e4, 5e5), 1)
    target_rho = rng.uniform(0, 1.25)  # about one case in five overloaded
    rate = round(target_rho * prefill_tok_s / (sum(prompt_lens) / len(prompt_lens)), 3)
    return {"arrival_rate": rate, "prompt_lens": prompt_lens, "prefill_tok_s": prefill_tok_s}


def _saturation_case(rng: random.Random) -> dict:
    return {"mean_prompt_len": round(rng.uniform(16, 8000), 1), "mean_output_len": round(rng.uniform(1, 2000), 1),
            "prefill_tok_s": round(rng.uniform(2e4, 5e5), 1), "decode_step_s": round(rng.uniform(0.002, 0.05), 5),
            "batch_size": rng.randint(1, 512)}


little = Task(
    "ch09.little", requests_in_system, _little_case,
    hint_text="Little's law: L = λ W, with λ in requests per second and W in seconds, so L is a plain count. It "
              "holds for any arrival pattern and any order of service, as long as the system is stable.",
    edge_cases=[{"arrival_rate": 0.0, "mean_latency_s": 2.5}, {"arrival_rate": 8.0, "mean_latency_s": 0.815},
                {"arrival_rate": 0.5, "mean_latency_s": 4.0}],
)

ttft = Task(
    "ch09.ttft", prefill_queue, _queue_case,
    hint_text="The model is an M/G/1 queue (Poisson arrivals, general service time, one server: the GPU's prefill). "
              "A request's service time is S = prompt_len / prefill_tok_s, so E[S] and E[S²] are means over "
              "prompt_lens. Utilisation ρ = λ E[S]; if ρ >= 1, return (ρ, math.inf). Otherwise the "
              "Pollaczek–Khinchine mean wait is λ E[S²] / (2 (1 − ρ)) (E[S²], not E[S]²: long prompts weigh "
              "more), and the TTFT adds the request's own prefill, E[S].",
    edge_cases=[
        {"arrival_rate": 0.0, "prompt_lens": [1000, 3000], "prefill_tok_s": 1000.0},  # empty server
        {"arrival_rate": 0.5, "prompt_lens": [1000], "prefill_tok_s": 1000.0},  # M/D/1: wait 0.5 s
        {"arrival_rate": 10.0, "prompt_lens": [100, 3900], "prefill_tok_s": 1e5},  # E[S²] > E[S]²
        {"arrival_rate": 3.0, "prompt_lens": [500], "prefill_tok_s": 1000.0},  # overloaded: ρ = 1.5
        {"arrival_rate": 2.0, "prompt_lens": [500], "prefill_tok_s": 1000.0},  # ρ = 1 exactly
    ],
)

saturation = Task(
    "ch09.saturation", saturation_output_tok_s, _saturation_case,
    hint_text="Find the GPU seconds one request costs: its prefill (prompt tokens / prefill tokens per second) "
              "plus its decode tokens, each of which costs decode_step_s / batch_size, since one step of a full "
              "batch yields batch_size tokens. A busy GPU finishes 1 / that requests per second, each with "
              "mean_output_len output tokens.",
    edge_cases=[
        {"mean_prompt_len": 2000.0, "mean_output_len": 300.0, "prefill_tok_s": 350000.0, "decode_step_s": 0.02,
         "batch_size": 256},
        {"mean_prompt_len": 8000.0, "mean_output_len": 10.0, "prefill_tok_s": 50000.0, "decode_step_s": 0.005,
         "batch_size": 64},  # prefill-bound
        {"mean_prompt_len": 100.0, "mean_output_len": 500.0, "prefill_tok_s": 100000.0, "decode_step_s": 0.01,
         "batch_size": 1},  # one request at a time
    ],
)

TASKS = [little, ttft, saturation]
