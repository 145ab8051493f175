"""N engine replicas behind one front end: ``serve --data-parallel-size N`` (chapter 11).

:func:`deploy` starts the ``EngineReplica`` deployment on Ray Serve with N replicas and
the chosen request router; :class:`ReplicaSet` is the front end's view of it, with the
interface of the single-engine front ends (``AsyncLLM``, ``AsyncEngine``), so the same
FastAPI app (``serving/api.py``: routes, API key, limits, errors) serves N replicas as
it serves one. The front end tokenizes and checks each request, then streams it from the
replica the router picks.

Failure: a replica that dies is replaced by Serve (its health check, or the actor's
death); the requests it was serving end with an error at once (Ray raises in their
streams), and new requests go to the live replicas while the replacement loads.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter

from ..config import EngineConfig
from ..inputs import Prompt, check_request, prompt_token_ids
from ..loader import load_tokenizer
from ..sampling_params import SamplingParams
from ..serving.async_engine import EngineDeadError, RequestStream
from ..serving.messages import EngineStats
from .replica import EngineReplica, ReplicaInfo, ReplicaRequest
from .routing import ROUTERS

APP_PREFIX = "tutorial_engine"


def deploy(config: EngineConfig, data_parallel_size: int, router: str = "prefix_affinity",
           router_options: dict | None = None, cpus_per_replica: float = 1.0):
    """Run ``data_parallel_size`` engine replicas on Ray Serve; returns the deployment's handle.

    Args:
        config: each replica's engine options (each gets its own KV and prefix cache).
        router: "prefix_affinity", "power_of_two" (Ray Serve's default) or "oracle".
        router_options: keyword arguments of the router (``EngineRequestRouter``); prefix
            affinity's ``block_size`` and ``capacity_tokens`` default to ``config``'s.
        cpus_per_replica: CPUs Ray reserves per replica; on a GPU each also takes one GPU.

    Raises:
        ValueError: ``data_parallel_size < 1`` or an unknown router.
    """
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from .runtime import connect

    if data_parallel_size < 1:
        raise ValueError(f"data_parallel_size={data_parallel_size} must be >= 1 (engine replicas).")
    if router not in ROUTERS:
        raise ValueError(f"router={router!r} is not one of {ROUTERS}.")
    connect()
    # No Ray Serve HTTP proxy: the engine's FastAPI front end serves HTTP and reaches the replicas
    # through the handle. A proxy would hold Ray's default 127.0.0.1:8000, the server's own port.
    serve.start(proxy_location="Disabled")
    options = {"num_replicas": data_parallel_size, "max_ongoing_requests": 1_000_000,  # the engine queues
               "health_check_period_s": 2, "health_check_timeout_s": 30, "graceful_shutdown_timeout_s": 5,
               "ray_actor_options": {"num_cpus": cpus_per_replica,
                                     "num_gpus": 1 if config.device not in ("cpu", "sim") else 0}}
    if router == "prefix_affinity":  # the router's record: the replicas' block size, and their KV capacity when
        # it is fixed (else unbounded: it is sized from memory inside each replica, after this call)
        blocks = config.num_kvcache_blocks
        router_options = {"block_size": config.kvcache_block_size,
                          "capacity_tokens": blocks * config.kvcache_block_size if blocks else None,
                          **(router_options or {})}
    if router != "power_of_two":
        from .request_router import EngineRequestRouter

        options["request_router_config"] = RequestRouterConfig(
            request_router_class=EngineRequestRouter,
            request_router_kwargs={"router": router, **(router_options or {})})
    deployment = serve.deployment(EngineReplica, name="EngineReplica", **options)
    # A fresh application name per deployment: two servers on one cluster must not replace
    # each other's replicas, and a process's handles share one router per name, so a
    # redeployment under an old name would keep the old router.
    app_name = f"{APP_PREFIX}-{uuid.uuid4().hex[:8]}"
    return serve.run(deployment.bind(config), name=app_name, route_prefix=None)


class ReplicaSet:
    """The front end's handle on the replicas, with ``AsyncLLM``'s interface.

    Args:
        handle: what :func:`deploy` returned.
        config: the replicas' options (the tokenizer is loaded here from ``config.model``).
    """

    def __init__(self, handle, config: EngineConfig) -> None:
        self.handle = handle
        self.app_name: str = handle.app_name
        self.tokenizer = load_tokenizer(config.model)
        self.info: ReplicaInfo = handle.info.remote().result()
        self.max_model_len = self.info.max_model_len
        self.vocab_size = self.info.vocab_size
        self.stats = EngineStats()  # per-replica stats live in the replicas; /metrics shows the front end's
        self.requests: dict[int, ReplicaRequest] = {}
        self.requests_per_replica: Counter[str] = Counter()  # replica id -> requests it served
        self._tasks: dict[int, asyncio.Task] = {}
        self._request_ids = itertools.count()
        self._stopped = False

    def start(self) -> None:
        """Nothing to start: the replicas run on Ray (the app's lifespan calls this)."""

    @property
    def is_running(self) -> bool:
        return not self._stopped

    def add_request(self, prompt: Prompt, params: SamplingParams, tenant: str | None = None) -> RequestStream:
        """Check a request and send it to the replica the router picks; returns its stream
        (call from a coroutine).

        Raises:
            TypeError, ValueError: the engine's checks (``inputs.py``), made here.
            EngineDeadError: the replica set was shut down.
        """
        if self._stopped:
            raise EngineDeadError("the replicas were shut down; restart the server.")
        token_ids = prompt_token_ids(prompt, self.tokenizer, self.vocab_size)
        info = self.info
        check_request(token_ids, params, info.max_model_len, info.num_kvcache_blocks, info.kvcache_block_size)
        request_id = next(self._request_ids)
        request = ReplicaRequest(token_ids, params, tenant)
        stream = RequestStream(self, request_id, len(token_ids))
        self.requests[request_id] = request
        self._tasks[request_id] = asyncio.get_running_loop().create_task(self._relay(request_id, request, stream))
        return stream

    async def _relay(self, request_id: int, request: ReplicaRequest, stream: RequestStream) -> None:
        """Copy the replica's outputs into the stream; a replica that dies ends it with an error."""
        response = self.handle.options(stream=True).generate.remote(request)
        first = True
        try:
            async for replica, out in response:
                if first:
                    self.requests_per_replica[replica] += 1
                    first = False
                stream.queue.put_nowait(out)
                if out.finished:
                    return
            raise RuntimeError("its stream ended before the request finished")
        except asyncio.CancelledError:
            response.cancel()  # the request's task on the replica is cancelled: it aborts there
            raise
        except Exception as err:  # the replica died, or Ray could not reach it
            stream.queue.put_nowait(EngineDeadError(f"the replica serving this request failed: {err}"))
        finally:
            self.requests.pop(request_id, None)
            self._tasks.pop(request_id, None)

    def abort(self, request_id: int) -> None:
        task = self._tasks.pop(request_id, None)
        if task is not None:
            task.cancel()

    def shutdown(self) -> None:
        """End every open stream and delete the replicas (the Ray instance stays)."""
        from ray import serve

        self._stopped = True
        for task in list(self._tasks.values()):
            task.cancel()
        serve.delete(self.app_name)
