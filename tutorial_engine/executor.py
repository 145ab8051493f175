"""Where step plans run. The engine talks to its model only through an executor:

``execute(plan) -> StepResult`` launches a step and returns without waiting for the
device, ``num_kvcache_blocks`` says how many KV pages each rank allocated (the scheduler
plans with that many), ``shutdown()`` gives the devices back.

:class:`InProcessExecutor` runs one :class:`~tutorial_engine.model_runner.ModelRunner`
in the engine's own process. Tensor parallelism puts one runner per rank, rank 0 here
and the others in worker processes, behind the same three members
(:class:`~tutorial_engine.tp_executor.TensorParallelExecutor`, chapter 8), or rank 0
here and the others as Ray actors anywhere in a cluster
(:class:`~tutorial_engine.cluster.ray_executor.RayTensorParallelExecutor`, chapter 11).
"""

from __future__ import annotations

from typing import Protocol

import torch

from .config import EngineConfig
from .model_runner import ModelRunner, StepResult
from .models import DecoderSpec
from .step_plan import StepPlan


class Executor(Protocol):
    num_kvcache_blocks: int

    def execute(self, plan: StepPlan) -> StepResult: ...

    def shutdown(self) -> None: ...


class InProcessExecutor:
    """One model runner on one device, in this process (``tensor_parallel_size=1``)."""

    def __init__(self, config: EngineConfig, spec: DecoderSpec, device: torch.device, dtype: torch.dtype,
                 max_model_len: int) -> None:
        self.runner = ModelRunner(config, spec, device, dtype, max_model_len)

    @property
    def num_kvcache_blocks(self) -> int:
        return self.runner.num_kvcache_blocks

    def execute(self, plan: StepPlan) -> StepResult:
        return self.runner.execute(plan)

    def shutdown(self) -> None:
        self.runner.shutdown()


def make_executor(config: EngineConfig, spec: DecoderSpec, device: torch.device, dtype: torch.dtype,
                  max_model_len: int) -> Executor:
    """The executor ``config.tensor_parallel_size`` and ``distributed_executor_backend``
    (or ``device="sim"``) ask for."""
    if config.device == "sim":
        from .sim.device import make_simulated_executor

        return make_simulated_executor(config, spec, max_model_len)
    if config.tensor_parallel_size == 1:
        return InProcessExecutor(config, spec, device, dtype, max_model_len)
    if config.distributed_executor_backend == "ray":
        from .cluster.ray_executor import RayTensorParallelExecutor  # imports Ray only when asked for

        return RayTensorParallelExecutor(config, spec, device, dtype, max_model_len)
    from .tp_executor import TensorParallelExecutor  # imports multiprocessing only when needed

    return TensorParallelExecutor(config, spec, device, dtype, max_model_len)
