"""Attention backends over the paged KV cache.

``torch`` is the readable reference; faster backends (``triton``, ``flash_attn``)
implement the same two functions and are tested against it. Their modules import
Triton / flash-attn, so they are loaded only when asked for.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Callable

import torch

from . import torch_backend
from .metadata import AttentionMetadata

logger = logging.getLogger(__name__)


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


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _triton_runs_on(device: torch.device) -> bool:
    """Triton compiles for CUDA GPUs; on a CPU only its interpreter (``TRITON_INTERPRET=1``) runs it."""
    return _installed("triton") and (device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


def _load(name: str) -> AttentionBackend:
    module = importlib.import_module(f"{__name__}.{name}_backend")
    return AttentionBackend(name, module.store_kvcache, module.paged_attention, supports_cuda_graphs=True)


def flash_attn_unusable_reason(block_size: int, dtype: torch.dtype, device: torch.device | None = None) -> str | None:
    """Why FlashAttention-2 cannot run this cache, or None: it needs an Ampere or newer
    GPU, takes float16/bfloat16 only, and reads a paged cache only in pages of a
    multiple of 256 tokens."""
    if device is not None and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        major, minor = torch.cuda.get_device_capability(device)
        return f"FlashAttention-2 needs compute capability 8.0+ (Ampere or newer), not sm_{major}{minor}"
    if dtype not in (torch.float16, torch.bfloat16):
        return f"FlashAttention-2 takes float16 or bfloat16, not {dtype}"
    if block_size % 256:
        return f"FlashAttention-2 reads pages of a multiple of 256 tokens, not kvcache_block_size={block_size}"
    return None


def auto_attention_backend(device: torch.device, block_size: int, dtype: torch.dtype) -> tuple[str, str]:
    """The backend ``auto`` picks for this device and cache, and why (a sentence)."""
    if device.type != "cuda":
        return "torch", "Triton and FlashAttention need a CUDA GPU (the Triton interpreter is far slower)"
    if not _installed("triton"):
        return "torch", "the `triton` package is not installed (a CUDA build of torch brings it)"
    # Imported here: importing tutorial_engine.models runs the decoder, which imports this package.
    from ..models.kernel_registry import triton_attention_unverified_reason

    unverified = triton_attention_unverified_reason()
    if unverified is not None:  # FlashAttention's path stores K/V with the Triton store kernel too
        return "torch", (f"the Triton attention kernels are off by default: {unverified} "
                         "(attention_backend='triton' runs them anyway)")
    if not _installed("flash_attn"):
        return "triton", "flash-attn is not installed (pip install flash-attn --no-build-isolation)"
    reason = flash_attn_unusable_reason(block_size, dtype, device)
    if reason is not None:
        return "triton", reason
    return "flash_attn", "flash-attn is installed and suits this cache"


def get_attention_backend(name: str, device: torch.device, block_size: int = 256,
                          dtype: torch.dtype = torch.bfloat16) -> AttentionBackend:
    """Resolve ``attention_backend``: ``torch``, ``triton``, ``flash_attn`` or ``auto``.

    ``auto`` is the fastest backend that will really run on ``device`` for pages of
    ``block_size`` tokens in ``dtype``: ``flash_attn`` (if importable and the cache
    suits it) > ``triton`` on a CUDA GPU, once the Triton kernels are GPU-verified
    (``models/kernel_registry.py``); ``torch`` on a CPU (the Triton interpreter is far
    slower).

    Raises:
        ValueError: when the named backend cannot run, saying what is missing and the fix.
    """
    if name == "auto":
        chosen, why = auto_attention_backend(device, block_size, dtype)
        logger.info("attention_backend='auto' runs %s on %s: %s", chosen, device, why)
        return TORCH_BACKEND if chosen == "torch" else _load(chosen)
    if name == "torch":
        return TORCH_BACKEND
    if name == "triton":
        if not _triton_runs_on(device):
            raise ValueError(
                f"attention_backend='triton' cannot run on {device}: it needs the `triton` package and a CUDA GPU "
                "(or TRITON_INTERPRET=1 set before Triton is imported, a slow CPU interpreter for tests); "
                "use 'torch' or 'auto'."
            )
        return _load("triton")
    if name == "flash_attn":
        if device.type != "cuda" or not _installed("flash_attn") or not _installed("triton"):
            raise ValueError(
                f"attention_backend='flash_attn' cannot run on {device}: it needs a CUDA GPU with the `flash-attn` "
                "and `triton` packages installed; use 'triton', 'torch' or 'auto'."
            )
        reason = flash_attn_unusable_reason(block_size, dtype, device)
        if reason is not None:
            raise ValueError(f"attention_backend='flash_attn' cannot run this cache: {reason}; set "
                             "kvcache_block_size=256 and dtype='bfloat16', or use 'triton' or 'auto'.")
        return _load("flash_attn")
    raise ValueError(f"attention_backend={name!r} is unknown; use 'auto', 'torch', 'triton' or 'flash_attn'.")


__all__ = ["AttentionBackend", "AttentionMetadata", "TORCH_BACKEND", "auto_attention_backend", "flash_attn_unusable_reason",
           "get_attention_backend"]
