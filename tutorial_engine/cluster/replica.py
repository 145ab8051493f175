"""One engine replica as a Ray Serve deployment replica (data parallelism, chapter 11).

Each replica is a whole engine: its own model copy, KV cache and prefix cache, its loop
in a thread of the replica's actor (``AsyncEngine``), so a replica that Ray kills takes
its engine with it and leaves no process behind. The front end (``replica_set.py``)
tokenizes, checks and sends :class:`ReplicaRequest` objects; the replica streams back
:class:`~tutorial_engine.output_processor.RequestOutput` deltas (text included: the
replica detokenizes its own requests, so the front end's CPU is spread over N replicas).
The deployment's request router (``request_router.py``) picks the replica per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..config import EngineConfig
from ..output_processor import RequestOutput
from ..sampling_params import SamplingParams


@dataclass(frozen=True)
class ReplicaRequest:
    """What the front end sends a replica. ``tenant``: the request's OpenAI ``user``
    field, which only the benchmark's oracle router reads."""

    prompt_token_ids: list[int]
    params: SamplingParams
    tenant: str | None = None


@dataclass(frozen=True)
class ReplicaInfo:
    """What the front end needs to check requests before sending them."""

    max_model_len: int
    vocab_size: int
    num_kvcache_blocks: int
    kvcache_block_size: int


class EngineReplica:
    """The body of the ``EngineReplica`` Serve deployment (``replica_set.deploy`` wraps it)."""

    def __init__(self, config: EngineConfig) -> None:
        from ..engine import LLMEngine
        from ..serving.async_engine import AsyncEngine

        from ray import serve

        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.engine = AsyncEngine(LLMEngine(config))
        self.engine.start()

    def info(self) -> ReplicaInfo:
        engine = self.engine.engine
        return ReplicaInfo(engine.max_model_len, engine.spec.vocab_size, engine.num_kvcache_blocks,
                           engine.config.kvcache_block_size)

    async def generate(self, request: ReplicaRequest) -> AsyncIterator[tuple[str, RequestOutput]]:
        """Stream one request's outputs, each with this replica's id; a cancelled call
        (the client left, the front end aborted) aborts the request here, which frees
        its pages."""
        stream = self.engine.add_request(request.prompt_token_ids, request.params)
        try:
            async for out in stream:
                yield self.replica_id, out
        finally:
            stream.close()

    def check_health(self) -> None:
        """Serve calls this periodically; raising marks the replica unhealthy, and Serve
        replaces it."""
        if not self.engine.is_running:
            raise RuntimeError("the engine loop of this replica has stopped")

    def __del__(self) -> None:
        self.engine.shutdown()
