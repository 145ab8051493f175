"""Tensor parallelism on Ray: ranks 1..N-1 as Ray actors, so a TP group can span machines (chapter 11).

``LLM(..., tensor_parallel_size=N, distributed_executor_backend="ray")``, vLLM's
``--distributed-executor-backend ray``. The step protocol is chapter 8's
(:class:`~tutorial_engine.tp_executor.TensorParallelExecutor`); only the way ranks
start and plans travel changes:

* **Placement.** One placement group reserves one bundle per rank, ``{"GPU": 1}`` on
  GPUs or ``{"CPU": 1}`` on CPUs, packed onto as few nodes as hold them (``PACK``:
  one machine when it fits, so the all-reduces stay on NVLink; the group spans
  machines when it does not). Bundle 0 is pinned to this node, for rank 0. Rank
  ``r`` is a :class:`~tutorial_engine.cluster.ray_worker.RayWorker` actor scheduled
  into bundle ``r`` (``PlacementGroupSchedulingStrategy``), on whatever node Ray put
  that bundle.
* **Rank 0 stays in the engine's process**, as with ``mp`` (and as in vLLM's first
  Ray executor, whose driver worker was rank 0): the sampled tokens never cross Ray,
  the overlapped loop of chapter 7 works unchanged, and ``executor.runner`` is rank
  0's runner for the benchmarks. On GPUs a placeholder actor sits in bundle 0 and
  only says which GPU Ray reserved there; rank 0 uses that one (Ray chooses every
  rank's GPU, so ``device`` names only the kind).
* **Rendezvous.** Rank 0's TCP store listens on a free port of every interface; the
  workers connect to this node's IP as Ray reports it. NCCL on GPUs, gloo on CPUs.
* **Each step**, rank 0 pickles the plan once, calls ``execute`` on every worker
  with those bytes (an actor runs one caller's calls in order), runs the step
  itself, and the ranks meet in the model's collectives. No step waits for a
  worker's reply. A plan is a few KiB, and Ray carries an argument under 100 KiB
  inside the call itself; putting it into the object store first (``ray.put``) cost
  rank 0 about 1.2 ms a step here against 0.3 ms for the whole dispatch this way,
  and a worker on another node would then fetch it. Ray moves a larger argument
  (a long prefill's plan) through the object store by itself.

Failure and shutdown, as strong as ``mp``'s:

* Each worker has a pending ``watch`` call, answered only when the worker fails
  (with its traceback) or dies (Ray's ActorDiedError). Before each step rank 0
  checks these without waiting: a dead rank is a RuntimeError, not a hang in a
  collective. A worker whose own step fails leaves its process, so the others'
  collectives fail at once.
* A step that fails on any rank stops every rank; later calls raise.
* ``shutdown()``, ``del llm`` and interpreter exit reach the same stop routine: kill
  the actors, wait until Ray reports them dead, remove the placement group. If the
  engine's process dies without it, Ray ends the job's actors and placement groups
  itself (their owner is gone).

Sources: vLLM's ``RayDistributedExecutor`` and ``initialize_ray_cluster`` (one
bundle per worker, the driver's node first); Ray's placement groups
(https://docs.ray.io/en/latest/ray-core/scheduling/placement-group.html).
"""

from __future__ import annotations

import os
import pickle
import weakref
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch

from ..config import EngineConfig
from ..distributed import COLLECTIVE_TIMEOUT, create_store, destroy_tensor_parallel, init_tensor_parallel
from ..model_runner import ModelRunner, StepResult
from ..models import DecoderSpec
from ..step_plan import StepPlan
from ..tp_executor import check_tensor_parallel
from ..tp_worker import WorkerArgs
from .ray_worker import Placement, RayWorker
from .runtime import connect

PLACEMENT_STRATEGY = "PACK"  # fewest nodes first; "STRICT_SPREAD" would force one rank per node
PLACEMENT_TIMEOUT_S = 60.0  # a group the cluster cannot hold is an error after this long, not a wait forever
STARTUP_TIMEOUT_S = 300.0  # a worker actor's process start (imports torch) on a busy node
DEATH_NOTICE_S = 2.0  # after a failed step, how long to wait for Ray to report which worker died
STOP_WAIT_S = 10.0  # shutdown waits this long for Ray to confirm the actors are dead


@dataclass
class WorkerActor:
    """Rank 0's handle on one actor: ``watch`` is the pending reference that resolves
    when the actor fails or dies. Rank 0's own entry (GPU only) is the placeholder."""

    rank: int
    actor: Any  # ray.actor.ActorHandle
    watch: Any  # ray.ObjectRef
    placement: Placement | None = None

    def describe(self) -> str:
        where = f" (pid {self.placement.pid} on {self.placement.node_ip})" if self.placement else ""
        return f"tensor-parallel rank {self.rank}{where}"


@dataclass
class RayRanks:
    """What the stop routine releases; held by the finalizer, not the executor."""

    actors: list[WorkerActor] = field(default_factory=list)
    placement_group: Any = None  # ray.util.placement_group.PlacementGroup
    num_threads: int | None = None  # this process's torch threads before rank 0 took its share


class RayTensorParallelExecutor:
    """Runs each step plan on ``config.tensor_parallel_size`` ranks: rank 0 in this
    process, the others as Ray actors anywhere in the cluster.

    Args: as :class:`~tutorial_engine.tp_executor.TensorParallelExecutor`; of
    ``device`` only the type counts (Ray assigns GPUs).

    Raises:
        ValueError: the model's heads or MLP width do not split that many ways.
        ImportError: Ray is not installed (naming the extra).
        RuntimeError: the cluster cannot hold the placement group within
            ``PLACEMENT_TIMEOUT_S`` (naming its free resources), this process already
            runs a tensor-parallel engine, or a rank failed to start (with its traceback).
    """

    def __init__(self, config: EngineConfig, spec: DecoderSpec, device: torch.device, dtype: torch.dtype,
                 max_model_len: int) -> None:
        world_size = config.tensor_parallel_size
        check_tensor_parallel(spec, world_size)
        if torch.distributed.is_initialized():
            raise RuntimeError("this process already runs a tensor-parallel engine (torch.distributed is "
                               "initialised); call shutdown() on it before creating another.")
        self._ray = ray = connect()
        self.runner: ModelRunner | None = None
        self.workers: list[WorkerActor] = []  # ranks 1..N-1
        self._stopped: str | None = None  # why the executor no longer runs steps
        self._ranks = RayRanks(num_threads=torch.get_num_threads())
        self._finalizer = weakref.finalize(self, stop_ranks, self._ranks)
        try:
            on_gpu = device.type == "cuda"
            pg = self._ranks.placement_group = reserve_bundles(ray, world_size, on_gpu)
            actors = [start_actor(ray, pg, rank, on_gpu) for rank in range(0 if on_gpu else 1, world_size)]
            self._ranks.actors.extend(actors)
            try:
                placements = ray.get([a.actor.placement.remote() for a in actors], timeout=STARTUP_TIMEOUT_S)
            except ray.exceptions.GetTimeoutError:
                raise RuntimeError(f"the worker actors did not start within {STARTUP_TIMEOUT_S:.0f} s") from None
            for actor, placement in zip(actors, placements):
                actor.placement = placement
            self.workers = [a for a in actors if a.rank > 0]
            if on_gpu:  # rank 0 runs on the GPU Ray reserved in bundle 0 (the placeholder's)
                device = local_gpu(actors[0].placement.gpu_ids[0])
            else:  # rank 0's bundle reserved one core, as each worker's did
                torch.set_num_threads(1)

            store = create_store(world_size)
            master_addr = ray.util.get_node_ip_address()  # reachable from the other nodes, unlike 127.0.0.1
            worker_device = torch.device("cuda", 0) if on_gpu else device  # Ray sets CUDA_VISIBLE_DEVICES
            ready = [w.actor.setup.remote(WorkerArgs(w.rank, config, spec, worker_device, dtype, max_model_len,
                                                     store.port), master_addr) for w in self.workers]
            init_tensor_parallel(0, world_size, device, store.port, store)  # blocks until every rank joins
            self.runner = ModelRunner(config, spec, device, dtype, max_model_len, tp_rank=0)
            for worker, num_blocks in zip(self.workers, ray.get(ready, timeout=COLLECTIVE_TIMEOUT.total_seconds())):
                if num_blocks != self.num_kvcache_blocks:
                    raise RuntimeError(f"rank {worker.rank} allocated {num_blocks} KV blocks, "
                                       f"rank 0 {self.num_kvcache_blocks}")
        except BaseException as err:
            self._stop_after(err, "start-up")

    @property
    def num_kvcache_blocks(self) -> int:
        return self.runner.num_kvcache_blocks

    @property
    def placement_group(self):
        """The ranks' placement group (``ray.util.placement_group.PlacementGroup``), or
        None once the executor stopped."""
        return self._ranks.placement_group

    def execute(self, plan: StepPlan) -> StepResult:
        """Send ``plan`` to every worker actor, run it on rank 0, return rank 0's result.

        Raises:
            RuntimeError: a worker has died, or an earlier step failed (the executor
                is stopped; create a new engine).
        """
        self._check_running()
        try:
            message = pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL)  # once, however many workers
            for worker in self.workers:
                worker.actor.execute.remote(message)
            return self.runner.execute(plan)
        except BaseException as err:
            self._stop_after(err, "step")

    def _check_running(self) -> None:
        if self._stopped is None:
            failures = self._worker_failures(wait_s=0.0)
            if failures is not None:
                self._fail(failures)
        if self._stopped is not None:
            raise RuntimeError(f"the tensor-parallel executor is stopped ({self._stopped}); create a new LLM.")

    def _worker_failures(self, wait_s: float) -> str | None:
        """Which workers failed (with their tracebacks) or died (with Ray's reason), or
        None; waits up to ``wait_s`` for the first report."""
        ray = self._ray
        watches = [w.watch for w in self.workers]
        if not watches or not ray.wait(watches, num_returns=1, timeout=wait_s)[0]:
            return None
        ready, _ = ray.wait(watches, num_returns=len(watches), timeout=0)
        failures = []
        for worker in (w for w in self.workers if w.watch in ready):
            try:
                failures.append(f"{worker.describe()} failed; it reported:\n{ray.get(worker.watch)}")
            except ray.exceptions.RayActorError as err:  # killed, or its node is gone
                reason = str(err).strip().splitlines()[-1]
                failures.append(f"{worker.describe()} died ({reason})")
        return "\n".join(failures)

    def _stop_after(self, err: BaseException, what: str) -> NoReturn:
        """Stop every rank after ``err`` broke a ``what`` ("start-up" or "step"); raise
        the worker's own failure when one caused it, else ``err`` itself."""
        cause = None if isinstance(err, KeyboardInterrupt) else self._worker_failures(wait_s=DEATH_NOTICE_S)
        self._fail(f"a {what} failed ({cause or f'{type(err).__name__}: {err}'})")
        if cause is None:
            raise err
        raise RuntimeError(f"a tensor-parallel {what} failed: {cause}") from err

    def _fail(self, reason: str) -> None:
        """Stop every rank now."""
        self._stopped = self._stopped or reason
        self._finalizer()
        self.runner = None

    def shutdown(self) -> None:
        """Free rank 0's device memory, kill the worker actors, remove the placement group."""
        if self.runner is not None:
            self.runner.shutdown()
            self.runner = None
        self._stopped = self._stopped or "it was shut down"
        self._finalizer()


def reserve_bundles(ray, world_size: int, on_gpu: bool):
    """A ready placement group of ``world_size`` one-device bundles, bundle 0 on this node.

    Raises:
        RuntimeError: the cluster cannot hold it within ``PLACEMENT_TIMEOUT_S``.
    """
    from ray.util.placement_group import placement_group, remove_placement_group

    bundle = {"GPU": 1} if on_gpu else {"CPU": 1}
    here = {"ray.io/node-id": ray.get_runtime_context().get_node_id()}
    pg = placement_group([bundle] * world_size, strategy=PLACEMENT_STRATEGY,
                         bundle_label_selector=[here] + [{}] * (world_size - 1))
    try:
        ray.get(pg.ready(), timeout=PLACEMENT_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        raise RuntimeError(f"tensor_parallel_size={world_size} needs {world_size} bundles of {bundle} "
                           f"(rank 0's on this node), but the Ray cluster could not reserve them in "
                           f"{PLACEMENT_TIMEOUT_S:.0f} s; its free resources: {ray.available_resources()}. Add nodes "
                           "(`ray start --address=HEAD:6379` on another machine) or lower tensor_parallel_size.")
    return pg


def start_actor(ray, pg, rank: int, on_gpu: bool) -> WorkerActor:
    """A :class:`RayWorker` actor in bundle ``rank`` of ``pg``, and its watch call."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    resources = dict(num_cpus=0, num_gpus=1) if on_gpu else dict(num_cpus=1)
    actor = ray.remote(concurrency_groups={"watch": 1})(RayWorker).options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=rank),
        max_restarts=0, **resources).remote()  # a restarted rank would have lost its shard and its process group
    return WorkerActor(rank, actor, actor.watch.options(concurrency_group="watch").remote())


def local_gpu(ray_gpu_id: str) -> torch.device:
    """This process's CUDA device for the GPU Ray calls ``ray_gpu_id`` (a physical id,
    or an entry of ``CUDA_VISIBLE_DEVICES`` when this process has one)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
    return torch.device("cuda", ids.index(ray_gpu_id))


def stop_ranks(ranks: RayRanks) -> None:
    """Kill every actor, wait up to ``STOP_WAIT_S`` for Ray to confirm they are dead,
    remove the placement group, leave rank 0's process group and give this process
    its threads back. Safe to call again; also runs on ``del`` and at interpreter exit
    (``weakref.finalize``). No graceful stop: a killed process frees its device, and
    a rank stuck in a collective could not stop gracefully anyway."""
    import ray

    if ray.is_initialized():  # else Ray has shut down, and with it this job's actors
        for worker in ranks.actors:  # removing the group would kill them too; say it outright
            ray.kill(worker.actor, no_restart=True)
        if ranks.actors:
            ray.wait([w.watch for w in ranks.actors], num_returns=len(ranks.actors), timeout=STOP_WAIT_S)
        if ranks.placement_group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(ranks.placement_group)
    ranks.actors.clear()
    ranks.placement_group = None
    destroy_tensor_parallel()
    if ranks.num_threads is not None:
        torch.set_num_threads(ranks.num_threads)
