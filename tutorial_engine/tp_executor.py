"""Tensor parallelism: one model split over ``tensor_parallel_size`` processes (chapter 8).

Rank 0 runs in the engine's process; ranks 1..N-1 run :func:`~tutorial_engine.tp_worker.run_worker`
in worker processes. Each rank builds a :class:`~tutorial_engine.model_runner.ModelRunner`
holding its shard of the weights (Megatron-LM layout, Shoeybi et al., 2019, section 3)
and of the KV cache, on its own device. Every step, rank 0 pickles the plan once and
writes it to each worker's pipe, then runs the step itself; the ranks meet in the
model's collectives (NCCL on GPUs, gloo on CPUs) and rank 0 ends up with the sampled
tokens. A plan is small: a decode step of 256 requests is a few kilobytes of arrays,
and with overlap scheduling its input tokens are placeholders the devices fill in.

Failure and shutdown, so that no process outlives its engine:

* Workers are daemon processes (``multiprocessing`` ends them when this interpreter
  exits), ignore Ctrl-C (rank 0 handles it) and exit when rank 0's end of their pipe
  closes, even if rank 0 was killed.
* ``shutdown()``, ``del llm`` and interpreter exit all reach the same stop routine
  (``weakref.finalize``): tell workers to stop, leave the process group, wait a
  while, then terminate what is left.
* A worker that died is noticed before the next step is sent (a clear RuntimeError,
  not a hang in a collective). A step that fails on any rank (an error, Ctrl-C)
  leaves the ranks at different points of its collectives, which no later step could
  line up again, so the executor stops all ranks and every later call raises.
"""

from __future__ import annotations

import os
import pickle
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import NoReturn

import torch
import torch.multiprocessing as mp

from .config import EngineConfig
from .distributed import (
    COLLECTIVE_TIMEOUT,
    NCCL_ENV_DEFAULTS,
    check_devices,
    create_store,
    destroy_tensor_parallel,
    init_tensor_parallel,
    rank_device,
)
from .model_runner import ModelRunner, StepResult
from .models import DecoderSpec
from .step_plan import StepPlan
from .tp_worker import STOP, WorkerArgs, run_worker

def check_tensor_parallel(spec: DecoderSpec, world_size: int) -> None:
    """Can ``spec`` be split ``world_size`` ways? Each rank must get whole query heads
    and whole MLP columns. KV heads: split when ``world_size`` divides them; when there
    are fewer KV heads than ranks and ``world_size`` is a multiple of them, each KV head
    is replicated on ``world_size / num_kv_heads`` ranks (as vLLM does); anything else
    is refused. The vocabulary needs no rule (the last shard is padded).

    Raises:
        ValueError: naming the config.json field, its value and the sizes that work.
    """
    if world_size == 1:
        return

    def fix(total: int) -> str:
        sizes = [n for n in range(1, total + 1) if total % n == 0]
        return f"choose a tensor_parallel_size that divides it: {sizes}"

    for field, value in (("num_attention_heads", spec.num_heads), ("intermediate_size", spec.intermediate_size)):
        if value % world_size:
            raise ValueError(f"tensor_parallel_size={world_size} does not divide {field}={value} of the "
                             f"model, so the ranks cannot get equal shards; {fix(value)}.")
    kv = spec.num_kv_heads
    if kv % world_size and world_size % kv:
        raise ValueError(f"tensor_parallel_size={world_size} neither divides num_key_value_heads={kv} nor is a "
                         f"multiple of it (then each KV head would be replicated); {fix(kv)}, or a multiple of "
                         f"{kv} that divides num_attention_heads={spec.num_heads}.")


STOP_GRACE_S = 30.0  # how long a stopping worker may take to free its device before it is terminated


@dataclass
class Worker:
    """Rank 0's handle on one worker process and its pipe."""

    rank: int
    process: BaseProcess
    conn: Connection


class TensorParallelExecutor:
    """Runs each step plan on ``config.tensor_parallel_size`` ranks; rank 0 in this process.

    Args: as :class:`~tutorial_engine.executor.InProcessExecutor`; ``device`` is rank 0's
    device (rank ``r`` uses the ``r``-th GPU after it, or the CPU for every rank).

    Raises:
        ValueError: before any process starts, when the model's heads or MLP width do
            not split ``tensor_parallel_size`` ways, or the machine has too few GPUs.
        RuntimeError: another tensor-parallel engine is running in this process, or a
            rank failed to start (with that rank's traceback).
    """

    def __init__(self, config: EngineConfig, spec: DecoderSpec, device: torch.device, dtype: torch.dtype,
                 max_model_len: int) -> None:
        world_size = config.tensor_parallel_size
        check_tensor_parallel(spec, world_size)
        check_devices(device, world_size)
        if torch.distributed.is_initialized():
            raise RuntimeError("this process already runs a tensor-parallel engine (torch.distributed is "
                               "initialised); call shutdown() on it before creating another.")
        for name, value in NCCL_ENV_DEFAULTS.items():  # spawned workers inherit the environment
            os.environ.setdefault(name, value)
        self.runner: ModelRunner | None = None
        self.workers: list[Worker] = []
        self._stopped: str | None = None  # why the executor no longer runs steps
        self._threads = torch.get_num_threads()
        if device.type == "cpu":  # the ranks share the cores, rank 0 too while this executor lives
            torch.set_num_threads(max(1, self._threads // world_size))
        self._finalizer = weakref.finalize(self, stop_workers, self.workers, STOP_GRACE_S, self._threads)
        try:
            store = create_store(world_size)
            context = mp.get_context("spawn")
            for rank in range(1, world_size):
                args = WorkerArgs(rank, config, spec, rank_device(device, rank), dtype, max_model_len, store.port)
                conn, child_conn = context.Pipe()
                process = context.Process(target=run_worker, args=(args, child_conn), daemon=True,
                                          name=f"tutorial-engine-tp{rank}")
                process.start()
                child_conn.close()  # the worker's end lives in the worker only, so EOF reaches it
                self.workers.append(Worker(rank, process, conn))
            # Joining the group blocks until every rank joins: first make sure none failed to start.
            self._wait_for("started")
            init_tensor_parallel(0, world_size, rank_device(device, 0), store.port, store)
            self.runner = ModelRunner(config, spec, rank_device(device, 0), dtype, max_model_len, tp_rank=0)
            for rank, num_blocks in enumerate(self._wait_for("ready"), start=1):
                if num_blocks != self.num_kvcache_blocks:
                    raise RuntimeError(f"rank {rank} allocated {num_blocks} KV blocks, rank 0 {self.num_kvcache_blocks}")
        except BaseException as err:
            self._stop_after(err, "start-up")

    @property
    def num_kvcache_blocks(self) -> int:
        return self.runner.num_kvcache_blocks

    def _wait_for(self, expected: str) -> list:
        """The value of each worker's next message, ``(expected, value)``; any other
        message is the worker's error report. Watches the processes meanwhile, so a
        worker that dies is an error, not a wait."""
        deadline = time.monotonic() + COLLECTIVE_TIMEOUT.total_seconds()
        values = []
        for worker in self.workers:
            while not worker.conn.poll(0.05):
                if not worker.process.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"tensor-parallel rank {worker.rank} did not start: {_exit_status(worker)}"
                                       " (a script that starts an LLM needs `if __name__ == \"__main__\":`, "
                                       "since workers re-import it)")
            kind, value = worker.conn.recv()
            if kind != expected:
                raise RuntimeError(f"tensor-parallel rank {worker.rank} failed to start:\n{value}")
            values.append(value)
        return values

    def execute(self, plan: StepPlan) -> StepResult:
        """Send ``plan`` to every worker, run it on rank 0, return rank 0's result.

        Raises:
            RuntimeError: a worker has died, or an earlier step failed (the executor
                is stopped; create a new engine).
        """
        self._check_running()
        try:
            message = pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL)
            for worker in self.workers:
                worker.conn.send_bytes(message)
            return self.runner.execute(plan)
        except BaseException as err:
            self._stop_after(err, "step")

    def _stop_after(self, err: BaseException, what: str) -> NoReturn:
        """Stop every rank after ``err`` broke a ``what`` ("start-up" or "step"); raise
        the worker's own failure when one caused it, else ``err`` itself."""
        cause = self._worker_failures()
        self._fail(f"a {what} failed ({cause or f'{type(err).__name__}: {err}'})")
        if cause is None or isinstance(err, KeyboardInterrupt):
            raise err
        raise RuntimeError(f"a tensor-parallel {what} failed: {cause}") from err

    def _check_running(self) -> None:
        if self._stopped is None:
            dead = next((w for w in self.workers if not w.process.is_alive()), None)
            if dead is not None:
                reason = f"tensor-parallel rank {dead.rank} died ({_exit_status(dead)})"
                self._fail(reason)
        if self._stopped is not None:
            raise RuntimeError(f"the tensor-parallel executor is stopped ({self._stopped}); create a new LLM.")

    def _fail(self, reason: str) -> None:
        """Stop every rank now (no grace: ranks may be stuck in a collective)."""
        self._stopped = self._stopped or reason
        if self._finalizer.detach() is not None:  # not stopped before
            stop_workers(self.workers, 0.0, self._threads)
        self.runner = None

    def _worker_failures(self) -> str | None:
        """Which workers died, with the tracebacks they sent before exiting, or None:
        the real cause when rank 0's own error is a collective that lost its peer."""
        failures = []
        for worker in self.workers:
            report = None
            try:
                while worker.conn.poll():
                    kind, value = worker.conn.recv()
                    report = value if kind == "error" else report
            except (EOFError, OSError):
                pass
            if report is not None:
                failures.append(f"rank {worker.rank} failed; it reported:\n{report}")
            elif not worker.process.is_alive():
                failures.append(f"rank {worker.rank} died ({_exit_status(worker)})")
        return "\n".join(failures) or None

    def shutdown(self) -> None:
        """Free rank 0's device memory, stop the workers and leave the process group."""
        if self.runner is not None:
            self.runner.shutdown()
            self.runner = None
        self._stopped = self._stopped or "it was shut down"
        self._finalizer()


def stop_workers(workers: list[Worker], grace_s: float, num_threads: int | None) -> None:
    """Ask each worker to stop, leave rank 0's process group, and wait up to ``grace_s``
    seconds for them to exit before terminating (then killing) what is left; give
    this process its ``num_threads`` back. Safe to call again; also runs on ``del``
    and at interpreter exit (``weakref.finalize``)."""
    if grace_s > 0:
        for worker in workers:
            try:
                worker.conn.send_bytes(STOP)
            except (OSError, ValueError):  # already gone, or the pipe is closed
                pass
    else:  # terminate first: a stuck collective could make leaving the group wait
        for worker in workers:
            if worker.process.is_alive():
                worker.process.terminate()
    destroy_tensor_parallel()
    deadline = time.monotonic() + grace_s
    for worker in workers:
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            worker.process.terminate()
            worker.process.join(5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    # The pipes stay open: a worker's last error report may still be read from them.


def _exit_status(worker: Worker) -> str:
    code = worker.process.exitcode
    if code is None:
        return f"pid {worker.process.pid} is alive but silent"
    return f"pid {worker.process.pid} exited with code {code}" + (" (killed by a signal)" if code < 0 else "")
