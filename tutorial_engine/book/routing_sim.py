"""A routing simulation small enough to run in a notebook cell (chapter 11).

Many tenants, each with its own system prompt (a prefix of ``prefix_len`` token ids),
send requests drawn Zipf-distributed over the tenants; each request is its tenant's
prefix followed by a suffix of its own. A router (any ``RoutingPolicy`` of
``tutorial_engine.cluster.routing``) sends each request to one of the replicas; each
replica's prefix cache is modelled by a :class:`~tutorial_engine.cluster.prefix_index.PrefixIndex`
(block-granular, least recently used blocks evicted at ``capacity_tokens``), so a request
hits the whole blocks of its longest prefix the replica still holds. Time moves one unit
per arrival; a request stays in flight for ``service(uncached tokens)`` units, and a
replica's load is the number of its requests in flight, as the router sees it.

No model and no timing of real hardware: it shows what a policy does to the hit rate and
to the spread of requests, in a fraction of a second. The chapter's measurement (two Ray
Serve replicas of the simulated H200, ``python -m tutorial_engine.cluster.bench_routing``)
is what gives latencies.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..cluster.prefix_index import PrefixIndex


@dataclass(frozen=True)
class Workload:
    """``requests``: (tenant, token ids) in arrival order; ``weights``: tenant -> share."""

    weights: dict[str, float]
    requests: list[tuple[str, list[int]]]


def zipf_shares(num_tenants: int, exponent: float, hot_share: float | None = None) -> list[float]:
    """Tenant ``i`` (from 0) gets a share proportional to ``1 / (i + 1) ** exponent``; with
    ``hot_share``, tenant 0 takes that share and the others split the rest the same way."""
    if hot_share is None:
        raw = [1 / (i + 1) ** exponent for i in range(num_tenants)]
        return [r / sum(raw) for r in raw]
    rest = zipf_shares(num_tenants - 1, exponent)
    return [hot_share] + [(1 - hot_share) * r for r in rest]


def tenant_workload(num_tenants: int = 48, prefix_len: int = 512, zipf_exponent: float = 0.8,
                    num_requests: int = 2000, suffix_len: tuple[int, int] = (16, 128),
                    hot_share: float | None = None, seed: int = 0) -> Workload:
    """Requests of ``num_tenants`` tenants: a tenant's prefix, then a random suffix."""
    rng = random.Random(seed)
    shares = zipf_shares(num_tenants, zipf_exponent, hot_share)
    tenants = [f"tenant {i}" for i in range(num_tenants)]
    prefixes = {t: [rng.randrange(100_000) for _ in range(prefix_len)] for t in tenants}
    requests = []
    for tenant in rng.choices(tenants, shares, k=num_requests):
        suffix = [rng.randrange(100_000) for _ in range(rng.randint(*suffix_len))]
        requests.append((tenant, prefixes[tenant] + suffix))
    return Workload(dict(zip(tenants, shares)), requests)


@dataclass(frozen=True)
class SimResult:
    """Prompt tokens found in the chosen replica's cache over all prompt tokens; requests
    sent to each replica, and the largest count over the mean. ``routed``: per request,
    (tenant, replica, cached tokens, prompt tokens); ``caches``: the replicas' caches at the end."""

    hit_rate: float
    requests_per_replica: dict[str, int]
    routed: list[tuple[str, str, int, int]]
    caches: PrefixIndex

    @property
    def load_max_over_mean(self) -> float:
        counts = list(self.requests_per_replica.values())
        return max(counts) / (sum(counts) / len(counts))


def default_service(uncached_tokens: int) -> float:
    """Arrivals a request stays in flight: a fixed part plus its prefill of the uncached tokens."""
    return 4 + uncached_tokens / 128


def simulate(policy, workload: Workload, replicas: Sequence[str], capacity_tokens: int,
             block_size: int = 16, service: Callable[[int], float] = default_service) -> SimResult:
    """Route every request of ``workload`` with ``policy``; each replica's cache holds
    ``capacity_tokens``."""
    caches = PrefixIndex(block_size, capacity_tokens)  # the replicas' own caches, one tree
    loads = {r: 0 for r in replicas}
    sent = {r: 0 for r in replicas}
    in_flight: list[tuple[float, str]] = []  # (time it finishes, replica)
    cached = prompt = 0
    routed = []
    for now, (tenant, tokens) in enumerate(workload.requests):
        while in_flight and in_flight[0][0] <= now:
            loads[heapq.heappop(in_flight)[1]] -= 1
        replica = policy.choose(tokens, dict(loads), tenant=tenant)
        hit = caches.match(tokens).get(replica, 0)
        caches.insert(replica, tokens)
        cached, prompt = cached + hit, prompt + len(tokens)
        routed.append((tenant, replica, hit, len(tokens)))
        sent[replica] += 1
        loads[replica] += 1
        heapq.heappush(in_flight, (now + service(len(tokens) - hit), replica))
    return SimResult(cached / prompt, sent, routed, caches)
