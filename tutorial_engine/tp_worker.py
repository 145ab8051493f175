"""A tensor-parallel worker: one of ranks 1..N-1 of a sharded engine (chapter 8).

Rank 0 lives in the engine's process (:class:`~tutorial_engine.tp_executor.TensorParallelExecutor`);
each other rank runs :func:`run_worker` in a process of its own, started with the
*spawn* method (a fresh interpreter: a process forked from one that has used CUDA
cannot use CUDA). A worker owns one device, its shard of the weights and of the KV
cache, and its own CUDA graphs, and loops: receive a step plan from rank 0, run it,
meeting the other ranks in the model's collectives, and wait for the next one. It
sends nothing back per step: rank 0 samples and broadcasts the tokens.

Messages on the worker's pipe:

* rank 0 -> worker: a pickled :class:`~tutorial_engine.step_plan.StepPlan`, or a
  pickled ``None``: stop;
* worker -> rank 0: ``("started", None)`` when its interpreter is up (before it
  joins the process group), ``("ready", num_kvcache_blocks)`` once set up, or
  ``("error", traceback)`` just before it exits on an exception.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection

import torch

from .config import EngineConfig
from .distributed import destroy_tensor_parallel, init_tensor_parallel
from .model_runner import ModelRunner
from .models import DecoderSpec

STOP = pickle.dumps(None)


@dataclass(frozen=True)
class WorkerArgs:
    """What a worker needs to build its rank (pickled to the new process).

    ``store_port``: the TCP port of rank 0's rendezvous store.
    """

    rank: int
    config: EngineConfig
    spec: DecoderSpec
    device: torch.device
    dtype: torch.dtype
    max_model_len: int
    store_port: int


def run_worker(args: WorkerArgs, conn: Connection) -> None:
    """The worker process's main function. Returns when told to stop or when rank 0's
    process is gone (the pipe closes); exits with code 1 after reporting an error."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is rank 0's to handle; it then stops us
    world_size = args.config.tensor_parallel_size
    if args.device.type == "cpu":  # share the cores instead of every rank using all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        conn.send(("started", None))
        init_tensor_parallel(args.rank, world_size, args.device, args.store_port)
        runner = ModelRunner(args.config, args.spec, args.device, args.dtype, args.max_model_len, tp_rank=args.rank)
        conn.send(("ready", runner.num_kvcache_blocks))
        serve(runner, conn)
    except EOFError:  # rank 0's process is gone: nobody to report to
        return
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
        sys.stderr.flush()
        # The other ranks may be waiting in a collective this rank will never join: leave
        # now, without a clean teardown that could wait on them.
        os._exit(1)
    runner.shutdown()
    destroy_tensor_parallel()


def serve(runner: ModelRunner, conn: Connection) -> None:
    """Run every plan rank 0 sends until it sends the stop message."""
    while True:
        message = conn.recv_bytes()  # EOFError when rank 0's end of the pipe closes
        if message == STOP:
            return
        runner.launch(pickle.loads(message))
