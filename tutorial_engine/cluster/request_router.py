"""The engine's routing policies plugged into Ray Serve's request-router interface.

Ray Serve runs a deployment's request router in every process that holds a handle to it
(here, the front end): for each request it calls ``choose_replicas`` with the replicas
that can take one and the pending request (its arguments, a :class:`ReplicaRequest`),
and sends the request to the least loaded replica of the first group returned. Ray's
own pieces do the rest: the replicas' queue lengths (its cache of what they reported,
and ``_probe_queue_lens``, the RPC its default power-of-two router uses), retries and
replicas that die. No ``FIFOMixin``: with it Ray may hand the replica chosen for one
request to an older pending one, and a choice made from a prompt's prefix must go to
that prompt. This class only turns a policy's choice into that answer; ``power_of_two`` needs no
class at all (it is Ray Serve's default router).
"""

from __future__ import annotations

from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from .routing import OraclePolicy, PrefixAffinityPolicy, RoutingPolicy


class EngineRequestRouter(RequestRouter):
    """``request_router_kwargs``: ``router`` ("prefix_affinity" or "oracle"), and for
    prefix affinity ``block_size``, ``capacity_tokens`` and the thresholds of
    :class:`PrefixAffinityPolicy`; for the oracle ``tenant_weights`` (tenant -> share)."""

    def initialize_state(self, router: str = "prefix_affinity", tenant_weights: dict | None = None,
                         **policy_options) -> None:
        if router == "prefix_affinity":
            self.policy: RoutingPolicy | None = PrefixAffinityPolicy(**policy_options)
        elif router == "oracle":
            self.tenant_weights = tenant_weights or {}
            self.policy = None  # assigned once the replicas are known, again when they change
            self.assigned_to: tuple[str, ...] = ()
        else:
            raise ValueError(f"router={router!r}: EngineRequestRouter takes 'prefix_affinity' or 'oracle' "
                             "('power_of_two' is Ray Serve's default router).")

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        if pending_request is None or not pending_request.args:  # Ray's own probes and warm-ups
            return [candidate_replicas]
        request = pending_request.args[0]
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        loads = await self._loads(candidate_replicas)
        policy = self._policy(tuple(sorted(by_id)))
        return [[by_id[policy.choose(request.prompt_token_ids, loads, request.tenant)]]]

    async def _loads(self, replicas: list[RunningReplica]) -> dict[str, int]:
        """Requests in flight per replica: from Ray's cache of the lengths replicas last
        reported (fresh within seconds), probing only the replicas it has no entry for,
        so routing adds no round trip in the common case."""
        loads, missing = {}, []
        for r in replicas:
            n = self._replica_queue_len_cache.get(r.replica_id)
            if n is None:
                missing.append(r)
            else:
                loads[r.replica_id.unique_id] = n
        for r, n in await self._probe_queue_lens(missing, 0) if missing else []:
            loads[r.replica_id.unique_id] = n if n is not None else 0
        return loads

    def _policy(self, replicas: tuple[str, ...]) -> RoutingPolicy:
        if self.policy is None or (isinstance(self.policy, OraclePolicy) and replicas != self.assigned_to):
            self.policy, self.assigned_to = OraclePolicy.even_split(self.tenant_weights, replicas), replicas
        return self.policy

    def on_replica_actor_died(self, replica_id) -> None:
        super().on_replica_actor_died(replica_id)
        if isinstance(self.policy, PrefixAffinityPolicy):  # its cache died with it
            self.policy.index.remove_replica(replica_id.unique_id)
