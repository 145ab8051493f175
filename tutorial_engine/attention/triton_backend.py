"""The ``triton`` attention backend: the AttentionBackend pair over the Triton kernels.

Decode-only steps (every sequence adds one token) take the split-K decode kernel;
any step with a longer query (prefill, chunked prefill, prefix-cache extend, or a
mixed batch) takes the paged prefill kernel. Both read K/V only from the pages.
"""

from __future__ import annotations

import functools

import torch
import triton

from .metadata import AttentionMetadata
from .triton_decode import paged_decode
from .triton_prefill import paged_prefill
from .triton_store import store_kvcache

# Tuned on an H200 for the Qwen3-0.6B attention shape (16 query heads, 8 KV heads,
# head_dim 128, bf16) by `python -m tutorial_engine.experiments.decode_bandwidth`:
# at batch 256, 3 pipeline stages beat 2 by ~7% at 1k and 4k context; 32/64/128-token
# tiles and 2/4 warps were within 3% of each other.
DECODE_BLOCK_N = 64
DECODE_NUM_WARPS = 4
DECODE_NUM_STAGES = 3
PROGRAMS_PER_SM = 2  # split contexts until about this many decode programs per SM (64 x 8 heads: no split)
MAX_SPLITS = 16
MIN_TOKENS_PER_SPLIT = 256  # shortest split; for one 4k-token request, 16 splits were the fastest measured


@functools.lru_cache(maxsize=None)
def _num_sms(device: torch.device) -> int:
    if device.type != "cuda":
        return 1  # the CPU interpreter: parallelism does not matter
    return torch.cuda.get_device_properties(device).multi_processor_count


def num_kv_splits(num_seqs: int, num_kv_heads: int, max_seq_len: int, device: torch.device) -> int:
    """How many context ranges per sequence the decode kernel uses (a power of two).

    Enough (sequence, KV head, split) programs to fill every SM a few times over, but
    no split shorter than ``MIN_TOKENS_PER_SPLIT`` tokens. Depends only on Python ints,
    so it never syncs the host; a CUDA graph should be captured with ``max_seq_len``
    set to ``max_model_len`` so long contexts keep their splits at replay.
    """
    wanted = triton.cdiv(PROGRAMS_PER_SM * _num_sms(device), num_seqs * num_kv_heads)
    useful = max(1, max_seq_len // MIN_TOKENS_PER_SPLIT)
    return min(triton.next_power_of_2(min(wanted, useful)), MAX_SPLITS)


def paged_attention(
    query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """Same contract as :func:`tutorial_engine.attention.torch_backend.paged_attention`.

    Reads no Python list from ``meta`` (only ``max_query_len``/``max_seq_len`` for the
    launch shape), so the decode path can be captured in a CUDA graph.
    """
    if meta.is_decode_only:
        splits = num_kv_splits(query.shape[0], k_cache.shape[2], meta.max_seq_len, query.device)
        return paged_decode(query, k_cache, v_cache, meta.block_tables, meta.seq_lens, scale, num_splits=splits,
                            block_n=DECODE_BLOCK_N, num_warps=DECODE_NUM_WARPS, num_stages=DECODE_NUM_STAGES)
    return paged_prefill(query, k_cache, v_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc,
                         meta.max_query_len, scale)


__all__ = ["num_kv_splits", "paged_attention", "store_kvcache"]
