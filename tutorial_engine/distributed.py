"""Tensor-parallel state and the collectives the sharded layers use (chapter 8).

Each rank is one process with one device and one ``torch.distributed`` process group
(NCCL on GPUs, gloo on CPUs). A layer reads its rank and the world size once, while it
is built (:func:`building_rank` says which shard the model being built is), and keeps
them: a model built outside that context is the whole, unsharded model and never
communicates, so a ``tensor_parallel_size=1`` engine can live beside a sharded one.

Megatron-LM (Shoeybi et al., 2019, section 3) is the layout: column-parallel and
row-parallel linear layers, one all-reduce after each row-parallel layer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# A collective that waits longer than this raises (gloo) or aborts (NCCL's watchdog)
# instead of hanging forever when a rank is gone.
COLLECTIVE_TIMEOUT = timedelta(minutes=5)

# NVLink SHARP / multicast stay off: not every machine that has NVLink supports them.
NCCL_ENV_DEFAULTS = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1


_building = RankInfo()


def get_tp_rank() -> int:
    """The rank of the model being built (0 outside :func:`building_rank`)."""
    return _building.rank


def get_tp_size() -> int:
    """The world size of the model being built (1 outside :func:`building_rank`)."""
    return _building.world_size


@contextlib.contextmanager
def building_rank(rank: int, world_size: int) -> Iterator[None]:
    """Layers created inside this block hold shard ``rank`` of ``world_size``."""
    global _building
    previous, _building = _building, RankInfo(rank, world_size)
    try:
        yield
    finally:
        _building = previous


def check_devices(device: torch.device, world_size: int) -> None:
    """Rank ``r`` runs on GPU ``device.index + r``; they must all exist.

    Raises:
        ValueError: naming ``tensor_parallel_size``, the GPUs found and the fix.
    """
    if device.type != "cuda" or world_size == 1:
        return
    first, count = device.index or 0, torch.cuda.device_count()
    if first + world_size > count:
        raise ValueError(f"tensor_parallel_size={world_size} needs {world_size} GPUs from cuda:{first} on, but "
                         f"this machine has {count}; lower tensor_parallel_size to at most {count - first}, "
                         "or use device='cpu' (gloo; slow, for tests).")


def rank_device(device: torch.device, rank: int) -> torch.device:
    """The device of ``rank``: consecutive GPUs from ``device``; every rank of a CPU run on the CPU."""
    return torch.device("cuda", (device.index or 0) + rank) if device.type == "cuda" else device


def create_store(world_size: int) -> dist.TCPStore:
    """Rank 0's rendezvous point on a free port the OS picks (no clash between runs)."""
    return dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False,
                         timeout=COLLECTIVE_TIMEOUT)


def init_tensor_parallel(rank: int, world_size: int, device: torch.device, port: int,
                         store: dist.TCPStore | None = None, host: str = "127.0.0.1") -> None:
    """Join the process group: NCCL on a GPU (bound to ``device``), gloo on a CPU.

    Rank 0 passes the store it created; the others connect to ``host:port`` (rank 0's
    machine; the store listens on every interface, so other machines reach it too).

    Raises:
        RuntimeError: this process is already in a process group (one sharded engine
            per process; shut the other down first).
    """
    if dist.is_initialized():
        raise RuntimeError("this process already runs a tensor-parallel engine (torch.distributed is "
                           "initialised); call shutdown() on it before creating another.")
    for name, value in NCCL_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if store is None:
        store = dist.TCPStore(host, port, world_size, is_master=False, timeout=COLLECTIVE_TIMEOUT)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", store=store, rank=rank, world_size=world_size,
                                timeout=COLLECTIVE_TIMEOUT, device_id=device)
    else:
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=COLLECTIVE_TIMEOUT)


def destroy_tensor_parallel() -> None:
    """Leave the process group, if this process is in one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum ``x`` over all ranks, in place; returns ``x``."""
    dist.all_reduce(x)
    return x


def gather_to_rank0(x: torch.Tensor, world_size: int) -> torch.Tensor | None:
    """Concatenate every rank's ``x`` ``[n, k]`` along the last axis on rank 0:
    ``[n, world_size * k]`` there, None on the other ranks."""
    rank = dist.get_rank()
    parts = [torch.empty_like(x) for _ in range(world_size)] if rank == 0 else None
    dist.gather(x, parts, dst=0)
    return torch.cat(parts, dim=-1) if rank == 0 else None


def broadcast_from_rank0(x: torch.Tensor) -> torch.Tensor:
    """Overwrite ``x`` on every rank with rank 0's ``x``; returns ``x``."""
    dist.broadcast(x, src=0)
    return x


def min_over_ranks(value: int, device: torch.device) -> int:
    """The smallest ``value`` any rank holds (e.g. KV blocks each rank's memory allows)."""
    x = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(x, op=dist.ReduceOp.MIN)
    return int(x.item())
