"""Attention backends over the paged KV cache.

``torch`` is the readable reference; faster backends (``triton``, ``flash_attn``)
implement the same two functions and are tested against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import torch_backend
from .metadata import AttentionMetadata


@dataclass(frozen=True)
class AttentionBackend:
    """A named pair of functions: store new K/V into the cache, then attend over it."""

    name: str
    store_kvcache: Callable[..., None]
    paged_attention: Callable[..., torch.Tensor]
    # True when a decode-only step reads lengths and block tables only from device
    # tensors and never syncs with the host, so it can be captured in a CUDA graph
    # (see tutorial_engine/cuda_graph.py). The torch reference loops over Python lists.
    supports_cuda_graphs: bool = False


TORCH_BACKEND = AttentionBackend("torch", torch_backend.store_kvcache, torch_backend.paged_attention)


def get_attention_backend(name: str, device: torch.device) -> AttentionBackend:
    """Resolve ``attention_backend`` (``auto`` picks the fastest available on ``device``).

    Raises:
        ValueError: when the named backend cannot run on ``device``.
    """
    if name in ("auto", "torch"):
        return TORCH_BACKEND
    raise ValueError(f"attention_backend={name!r} is not available on {device}; use 'torch' or 'auto'.")


__all__ = ["AttentionBackend", "AttentionMetadata", "TORCH_BACKEND", "get_attention_backend"]
