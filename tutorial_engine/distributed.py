"""Tensor-parallel process-group state. With one GPU (the default) every call is a no-op.

Layers ask for the rank and world size here, so the same model code runs sharded
across ``tensor_parallel_size`` GPUs (Megatron-LM, Shoeybi et al., 2019, section 3)
once the tensor-parallel chapter initialises ``torch.distributed``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def get_tp_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def get_tp_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over the tensor-parallel group in place (no-op with one rank)."""
    if get_tp_size() > 1:
        dist.all_reduce(x)
    return x
