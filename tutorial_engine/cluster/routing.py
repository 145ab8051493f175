"""Which replica serves a request: routing policies over N engine replicas (chapter 11).

Every policy sees the request's prompt token ids, the replicas' loads (requests in
flight at each, as the router last learned them) and, where the workload names one, the
request's tenant, and names a replica. They differ in what they optimise:

- :class:`PowerOfTwoPolicy`: load only. Pick two replicas at random, send to the less
  loaded (Mitzenmacher, 2001, "The Power of Two Choices in Randomized Load Balancing";
  Ray Serve's default router). Prefixes land anywhere, so each replica ends up caching
  every popular prefix.
- :class:`PrefixAffinityPolicy`: cache first, load as a guard (SGLang's cache-aware
  router). Send the request where the :class:`PrefixIndex` says the longest prefix of
  it is cached; a prompt that matches too little goes where the least is cached (new
  prefixes spread by cache size); and when the loads drift apart beyond both an
  absolute and a relative threshold, the least loaded replica takes the request
  whatever its cache holds.
- :class:`OraclePolicy`: the reference the benchmark compares with. It knows each
  request's tenant and the tenants' traffic shares in advance and splits the tenants
  evenly between the replicas: the same number of prefixes each, traffic nearly even.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .prefix_index import PrefixIndex

RouterName = Literal["prefix_affinity", "power_of_two", "oracle"]
ROUTERS: tuple[RouterName, ...] = ("prefix_affinity", "power_of_two", "oracle")


class RoutingPolicy(Protocol):
    name: str

    def choose(self, token_ids: Sequence[int], loads: Mapping[str, int], tenant: str | None = None) -> str:
        """The replica (a key of ``loads``) that serves this request."""
        ...


def least_loaded(loads: Mapping[str, int], among: Sequence[str] | None = None) -> str:
    """The replica with the fewest requests in flight; ties go to the first listed."""
    among = list(loads) if among is None else among
    return min(among, key=lambda r: loads[r])


@dataclass
class PowerOfTwoPolicy:
    """Two replicas drawn at random; the less loaded one serves."""

    seed: int = 0
    name: str = "power_of_two"
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def choose(self, token_ids: Sequence[int], loads: Mapping[str, int], tenant: str | None = None) -> str:
        replicas = list(loads)
        return least_loaded(loads, self.rng.sample(replicas, min(2, len(replicas))))


@dataclass
class PrefixAffinityPolicy:
    """SGLang's cache-aware routing rule over a :class:`PrefixIndex`.

    Args:
        block_size: tokens per KV block of the replicas.
        capacity_tokens: one replica's KV capacity in tokens (the index evicts beyond it).
        balance_abs_threshold, balance_rel_threshold: the loads count as imbalanced when
            ``max - min > balance_abs_threshold`` and ``max > balance_rel_threshold * min``;
            then the least loaded replica serves.
        cache_threshold: below this fraction of the prompt matched anywhere, the replica
            with the least cached serves (a new prefix goes where there is room).
    """

    block_size: int = 16
    capacity_tokens: int | None = None
    balance_abs_threshold: int = 4
    balance_rel_threshold: float = 1.25
    cache_threshold: float = 0.5
    name: str = "prefix_affinity"
    index: PrefixIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = PrefixIndex(self.block_size, self.capacity_tokens)

    def choose(self, token_ids: Sequence[int], loads: Mapping[str, int], tenant: str | None = None) -> str:
        low, high = min(loads.values()), max(loads.values())
        if high - low > self.balance_abs_threshold and high > self.balance_rel_threshold * low:
            replica = least_loaded(loads)
        else:
            matched = {r: n for r, n in self.index.match(token_ids).items() if r in loads}
            best = max(matched.values(), default=0)
            if best < self.cache_threshold * len(token_ids):
                replica = min(loads, key=lambda r: (self.index.cached_tokens(r), loads[r]))
            else:
                replica = least_loaded(loads, [r for r, n in matched.items() if n == best])
        self.index.insert(replica, token_ids)
        return replica


@dataclass
class OraclePolicy:
    """Tenants assigned to replicas in advance (``assignment``: tenant -> replica);
    a request without a known tenant goes to the least loaded replica."""

    assignment: Mapping[str, str]
    name: str = "oracle"

    @classmethod
    def even_split(cls, tenant_weights: Mapping[str, float], replicas: Sequence[str]) -> OraclePolicy:
        """Tenants dealt to replicas in snake order of traffic (heaviest first: 0, 1, 1, 0,
        0, 1, ...): each replica gets the same number of prefixes to cache, and nearly
        the same traffic."""
        ranked = sorted(tenant_weights, key=lambda t: -tenant_weights[t])
        n = len(replicas)
        return cls({tenant: replicas[i % n if (i // n) % 2 == 0 else n - 1 - i % n]
                    for i, tenant in enumerate(ranked)})

    def choose(self, token_ids: Sequence[int], loads: Mapping[str, int], tenant: str | None = None) -> str:
        replica = self.assignment.get(tenant) if tenant is not None else None
        return replica if replica in loads else least_loaded(loads)
