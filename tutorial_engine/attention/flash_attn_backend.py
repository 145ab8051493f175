"""The ``flash_attn`` backend: Tri Dao's FlashAttention-2 kernels over the paged cache.

Used when the ``flash-attn`` package is importable (it is a CUDA build, absent from
CPU machines). Decode steps call ``flash_attn_with_kvcache`` with the block table;
other steps call ``flash_attn_varlen_func`` with the block table, whose causal mask is
aligned to the end of each sequence, as the cached-prefix case needs. FlashAttention-2
reads paged K/V only with pages of a multiple of 256 tokens (its docstring) and only in
float16/bfloat16, which :func:`~tutorial_engine.attention.get_attention_backend` checks
before choosing it. K/V stores use the Triton kernel.
"""

from __future__ import annotations

import torch
from flash_attn import flash_attn_varlen_func, flash_attn_with_kvcache

from .metadata import AttentionMetadata
from .triton_store import store_kvcache

def paged_attention(
    query: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float
) -> torch.Tensor:
    """Same contract as :func:`tutorial_engine.attention.torch_backend.paged_attention`."""
    if meta.is_decode_only:
        out = flash_attn_with_kvcache(query.unsqueeze(1), k_cache, v_cache, cache_seqlens=meta.seq_lens,
                                      block_table=meta.block_tables, softmax_scale=scale, causal=True)
        return out.squeeze(1)
    return flash_attn_varlen_func(query, k_cache, v_cache, cu_seqlens_q=meta.query_start_loc,
                                  cu_seqlens_k=meta.seq_start_loc,
                                  max_seqlen_q=meta.max_query_len, max_seqlen_k=meta.max_seq_len,
                                  softmax_scale=scale, causal=True, block_table=meta.block_tables)


__all__ = ["paged_attention", "store_kvcache"]
