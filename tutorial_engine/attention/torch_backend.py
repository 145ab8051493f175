"""The reference attention backend: plain PyTorch over the paged KV cache.

It is slow and clear on purpose: every faster backend is tested against it. The
cache layout is ``[num_blocks, block_size, num_kv_heads, head_dim]`` per layer for K
and for V (PagedAttention, Kwon et al., SOSP 2023, section 4.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .metadata import AttentionMetadata


def store_kvcache(
    key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Scatter new K/V ``[T, num_kv_heads, head_dim]`` into their cache slots ``[T]``.

    A slot of -1 means "do not store" (padding rows of a CUDA-graph batch).
    """
    keep = slot_mapping >= 0
    if not bool(keep.all()):
        key, value, slot_mapping = key[keep], value[keep], slot_mapping[keep]
    k_cache.view(-1, *k_cache.shape[2:])[slot_mapping] = key
    v_cache.view(-1, *v_cache.shape[2:])[slot_mapping] = value


def gather_kv(cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The first ``seq_len`` cached tokens of one sequence, ``[seq_len, kv_heads, head_dim]``."""
    num_blocks = -(-seq_len // cache.shape[1])
    return cache[block_table[:num_blocks]].flatten(0, 1)[:seq_len]


def paged_attention(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Causal attention of each sequence's new tokens over its whole cached context.

    Args:
        query: ``[T, num_heads, head_dim]`` for the new tokens of all sequences.
        k_cache, v_cache: ``[num_blocks, block_size, num_kv_heads, head_dim]``, already
            holding this step's K/V (call :func:`store_kvcache` first).
        meta: lengths and block tables of the batch.
        scale: softmax scale, usually ``head_dim ** -0.5``.

    Returns:
        ``[T, num_heads, head_dim]``, same dtype as ``query``.

    Query token ``j`` of a sequence with ``q`` new tokens and ``n`` context tokens sits
    at position ``n - q + j`` and sees keys ``0 .. n - q + j`` (grouped-query attention:
    each KV head serves ``num_heads / num_kv_heads`` query heads).
    """
    out = torch.empty_like(query)
    group = query.shape[1] // k_cache.shape[2]
    starts = meta.query_start_loc_cpu
    for i, seq_len in enumerate(meta.seq_lens_cpu):
        q = query[starts[i] : starts[i + 1]]  # [q_len, H, D]
        q_len = q.shape[0]
        k = gather_kv(k_cache, meta.block_tables[i], seq_len).repeat_interleave(group, dim=1)
        v = gather_kv(v_cache, meta.block_tables[i], seq_len).repeat_interleave(group, dim=1)
        positions = torch.arange(seq_len - q_len, seq_len, device=q.device)
        mask = torch.arange(seq_len, device=q.device)[None, :] <= positions[:, None]  # [q_len, seq_len]
        o = F.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, scale=scale
        )
        out[starts[i] : starts[i + 1]] = o.transpose(0, 1)
    return out
