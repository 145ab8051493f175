"""A tensor-parallel rank as a Ray actor: one of ranks 1..N-1 of a sharded engine (chapter 11).

The Ray twin of :mod:`tutorial_engine.tp_worker`: the same
:class:`~tutorial_engine.model_runner.ModelRunner` on one shard, fed the same step
plans, but started by Ray inside a placement-group bundle (on any machine of the
cluster) instead of as a local process, and called through actor methods instead of
a pipe. :class:`~tutorial_engine.cluster.ray_executor.RayTensorParallelExecutor`
turns this plain class into an actor (``ray.remote(RayWorker)``), so importing this
module needs no Ray.

Methods, called by rank 0 in this order (an actor runs its calls one at a time, in
the order one caller sent them, so plans arrive in step order):

* :meth:`placement` -- where Ray put the actor (node, pid, GPU);
* :meth:`setup` -- join the process group and build the rank's runner; returns its
  number of KV blocks;
* :meth:`execute` -- launch one step (a pickled plan); returns nothing (rank 0 samples);
* :meth:`watch`, in a concurrency group of its own so it runs beside the others:
  returns only when the worker fails, with the traceback. Its result is rank 0's
  "is this rank still alive?" signal: it fails with Ray's ActorDiedError when the
  actor dies for any reason, and holds the traceback when the worker itself failed.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
import traceback
from dataclasses import dataclass

import torch

from ..distributed import init_tensor_parallel
from ..model_runner import ModelRunner
from ..tp_worker import WorkerArgs

REPORT_GRACE_S = 1.0  # a failed worker lives this long after failing, so its traceback can reach rank 0


@dataclass(frozen=True)
class Placement:
    """Where Ray started a rank: the actor's id, its node's id and IP, its process id,
    and the GPU ids Ray reserved for it (empty on a CPU)."""

    actor_id: str
    node_id: str
    node_ip: str
    pid: int
    gpu_ids: tuple[str, ...]


class RayWorker:
    """One tensor-parallel rank inside a Ray actor. Errors never return to the caller
    as exceptions: a failed rank leaves (see :meth:`_fail`), so that the other ranks'
    collectives fail at once instead of waiting for it."""

    def __init__(self) -> None:
        self.runner: ModelRunner | None = None
        self._failed = threading.Event()
        self._report = ""

    def placement(self) -> Placement:
        import ray  # only ever called inside a Ray actor

        context = ray.get_runtime_context()
        return Placement(context.get_actor_id(), context.get_node_id(), ray.util.get_node_ip_address(), os.getpid(),
                         tuple(str(gpu) for gpu in ray.get_gpu_ids()))

    def setup(self, args: WorkerArgs, master_addr: str) -> int:
        """Join rank 0's process group at ``master_addr:args.store_port``, build this
        rank's shard; returns its KV block count."""
        try:
            if args.device.type == "cpu":
                torch.set_num_threads(1)  # the rank's bundle reserved one core
            init_tensor_parallel(args.rank, args.config.tensor_parallel_size, args.device, args.store_port,
                                 host=master_addr)
            self.runner = ModelRunner(args.config, args.spec, args.device, args.dtype, args.max_model_len,
                                      tp_rank=args.rank)
            return self.runner.num_kvcache_blocks
        except BaseException:
            self._fail()

    def execute(self, message: bytes) -> None:
        """Launch the pickled :class:`~tutorial_engine.step_plan.StepPlan` ``message`` on
        this rank's shard, meeting the other ranks in its collectives."""
        try:
            self.runner.launch(pickle.loads(message))
        except BaseException:
            self._fail()

    def watch(self) -> str:
        """Block until this worker fails; returns its traceback."""
        self._failed.wait()
        return self._report

    def _fail(self) -> None:
        """Hand the traceback to :meth:`watch`, then end the process: the other ranks
        may be waiting in a collective this rank will never join, and only a closed
        connection tells them at once (a clean teardown could wait on them)."""
        self._report = traceback.format_exc()
        self._failed.set()
        time.sleep(REPORT_GRACE_S)
        os._exit(1)
