"""Chapter 11 tasks: what routing does to the prefix-cache hit rate, how many replicas a
request rate needs, and the load-balance fallback of a prefix-aware router.

* **Hit rate of a prefix mix.** ``P`` prefixes of ``L`` tokens each are requested with
  probabilities ``probs`` (in any order); every request adds ``S`` suffix tokens of its own,
  which are never cached. ``R`` replicas each keep ``C`` prefixes in their cache, and in
  the steady state a cache keeps the ``C`` prefixes requested most often *at that replica*
  (cold misses are left out). A router that ignores prefixes (random, round robin, power
  of two choices) shows every replica the whole mix: each keeps the same top ``C``, and a
  request hits with probability ``sum(top C probs)``. Perfect affinity partitions the
  prefixes, so the replicas together keep the top ``R * C``. A hit saves ``L`` of the
  ``L + S`` prompt tokens.
* **Replicas for a request rate.** One replica was measured at several offered rates; its
  capacity under a TTFT p99 bound is the highest *achieved* request rate among the runs
  that met the bound. ``ceil(target / capacity)`` replicas serve the target if the router
  spreads the requests evenly and a replica's capacity does not change with its share.
* **The imbalance fallback** (SGLang's cache-aware router): when the busiest replica has
  more than ``abs_threshold`` requests in flight over the idlest *and* more than
  ``rel_threshold`` times as many, send the request to the idlest; otherwise to the
  replica with the longest cached prefix, the less loaded one on a tie.
"""

from __future__ import annotations

import math
import random

from .task import Task


def expected_hit_rates(probs: list[float], prefix_len: int, suffix_len: int, num_replicas: int,
                       cache_prefixes: int) -> tuple[float, float]:
    """(hit rate with prefix-blind routing, hit rate with perfect affinity): cached
    prompt tokens over prompt tokens, in the steady state."""
    ranked = sorted(probs, reverse=True)
    share = prefix_len / (prefix_len + suffix_len)  # a hit saves the prefix, never the suffix
    blind = sum(ranked[:cache_prefixes])  # every replica keeps the same top C
    affinity = sum(ranked[:num_replicas * cache_prefixes])  # together they keep the top R * C
    return share * blind, share * affinity


def replicas_needed(runs: list[tuple[float, float, float]], ttft_p99_bound_ms: float,
                    target_rate: float) -> int | None:
    """Replicas to serve ``target_rate`` requests/s, given one replica's runs as
    (offered rate, achieved rate, TTFT p99 in ms); None if no run met the bound."""
    within = [achieved for offered, achieved, p99 in runs if p99 <= ttft_p99_bound_ms]
    if not within:
        return None
    capacity = max(within)
    return max(1, math.ceil(target_rate / capacity - 1e-9))


def route(matched: dict[str, int], loads: dict[str, int], abs_threshold: int,
          rel_threshold: float) -> str:
    """The replica for one request: the least loaded when the load is too uneven, else
    the longest match (ties: less load, then the name that sorts first)."""
    replicas = sorted(loads)
    idlest = min(replicas, key=lambda r: loads[r])
    busiest = max(loads.values())
    if busiest - loads[idlest] > abs_threshold and busiest > rel_threshold * loads[idlest]:
        return idlest
    return min(replicas, key=lambda r: (-matched.get(r, 0), loads[r], r))


def _hit_case(rng: random.Random) -> dict:
    num = rng.randint(1, 40)
    raw = [rng.random() ** 3 + 1e-3 for _ in range(num)]
    return {"probs": [round(r / sum(raw), 6) for r in raw], "prefix_len": rng.choice([64, 256, 1000, 2048, 4096]),
            "suffix_len": rng.randint(0, 600), "num_replicas": rng.randint(1, 8), "cache_prefixes": rng.randint(0, 12)}


def _replicas_case(rng: random.Random) -> dict:
    runs = []
    for _ in range(rng.randint(1, 6)):
        offered = round(rng.uniform(1, 100), 2)
        achieved = round(offered * rng.uniform(0.6, 1.0), 3)
        runs.append((offered, achieved, round(rng.uniform(20, 3000), 1)))
    return {"runs": runs, "ttft_p99_bound_ms": rng.choice([100.0, 250.0, 500.0, 1000.0, 2000.0]),
            "target_rate": round(rng.uniform(0.5, 500), 2)}


def _route_case(rng: random.Random) -> dict:
    replicas = [f"replica {i}" for i in range(rng.randint(2, 5))]
    loads = {r: rng.randint(0, 60) for r in replicas}
    matched = {r: 16 * rng.randint(1, 40) for r in replicas if rng.random() < 0.5}
    return {"matched": matched, "loads": loads, "abs_threshold": rng.choice([0, 2, 8, 16, 32]),
            "rel_threshold": rng.choice([1.0, 1.2, 1.5, 2.0])}


hit_rates = Task(
    "ch11.hit_rates", expected_hit_rates, _hit_case,
    hint_text="Sort the probabilities, largest first: a cache keeps the prefixes its replica sees most. A "
              "prefix-blind router shows every replica the same mix, so all keep the same top C; with perfect "
              "affinity the replicas split the prefixes and together keep the top R × C. Then a hit saves only "
              "the L prefix tokens of the L + S in the prompt.",
    edge_cases=[
        {"probs": [0.5, 0.3, 0.2], "prefix_len": 1000, "suffix_len": 0, "num_replicas": 2, "cache_prefixes": 1},
        {"probs": [0.1, 0.2, 0.3, 0.4], "prefix_len": 1000, "suffix_len": 250, "num_replicas": 2,
         "cache_prefixes": 1},  # unsorted: the top prefix is the last
        {"probs": [0.25] * 4, "prefix_len": 512, "suffix_len": 128, "num_replicas": 4, "cache_prefixes": 3},
        {"probs": [0.6, 0.4], "prefix_len": 512, "suffix_len": 64, "num_replicas": 3, "cache_prefixes": 0},
    ],
)

replicas = Task(
    "ch11.replicas", replicas_needed, _replicas_case,
    hint_text="Keep the runs whose TTFT p99 is within the bound; one replica's capacity is the highest request "
              "rate it *achieved* among them (what it was offered is not what it served). Then round the number "
              "of replicas up: 2.1 replicas' worth of traffic needs 3. No run within the bound: return None.",
    edge_cases=[
        {"runs": [(8.0, 6.8, 95.0), (32.0, 24.0, 400.0), (64.0, 25.8, 9000.0)], "ttft_p99_bound_ms": 500.0,
         "target_rate": 100.0},
        {"runs": [(10.0, 10.0, 50.0), (20.0, 15.0, 80.0)], "ttft_p99_bound_ms": 60.0, "target_rate": 20.0},
        {"runs": [(10.0, 10.0, 50.0)], "ttft_p99_bound_ms": 40.0, "target_rate": 5.0},
        {"runs": [(10.0, 8.0, 50.0)], "ttft_p99_bound_ms": 100.0, "target_rate": 3.0},
    ],
)

fallback = Task(
    "ch11.fallback", route, _route_case,
    hint_text="First the balance test: busiest − idlest > abs_threshold AND busiest > rel_threshold × idlest; if "
              "both hold, the idlest replica wins. Otherwise take the longest match (a replica missing from "
              "`matched` matched 0 tokens); on a tie prefer the smaller load, then the name that sorts first.",
    edge_cases=[
        {"matched": {"a": 512}, "loads": {"a": 40, "b": 2}, "abs_threshold": 32, "rel_threshold": 1.5},
        {"matched": {"a": 512}, "loads": {"a": 30, "b": 2}, "abs_threshold": 32, "rel_threshold": 1.5},
        {"matched": {"a": 512}, "loads": {"a": 40, "b": 30}, "abs_threshold": 4, "rel_threshold": 1.5},
        {"matched": {}, "loads": {"a": 3, "b": 1, "c": 1}, "abs_threshold": 8, "rel_threshold": 1.5},
        {"matched": {"a": 64, "b": 64}, "loads": {"a": 5, "b": 4}, "abs_threshold": 8, "rel_threshold": 1.5},
    ],
)

TASKS = [hit_rates, replicas, fallback]
