"""Paged prefill attention in Triton: many new tokens per sequence, varlen batch.

Sequence ``i`` brings ``query_len`` new tokens that are the *last* ``query_len`` of its
``seq_len`` tokens; the earlier ones may already sit in the paged cache (a prefix-cache
hit, or the previous chunks of a chunked prefill), and the new ones were just stored
there too. So every key is read from the pages, with a causal mask in absolute
positions: new token ``j`` (position ``seq_len - query_len + j``) sees keys ``0 ..`` its position.

A program owns ``BLOCK_Q`` consecutive new tokens of one sequence times the ``GROUP``
query heads of one KV head, as ``BLOCK_M = BLOCK_Q * GROUP`` rows of one tile: each
K/V tile loaded from the pages serves all of them (GQA-aware, like the decode kernel).
The loop over keys is FlashAttention-2's (Dao, 2023): online softmax, never a full
score matrix. Decode rows (``query_len == 1``) are a special case, so mixed
prefill/decode batches of chunked prefill run in one launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_decode import LOG2E


# The block table's row stride is 1 when one sequence fits one page (a warm-up); Triton
# would specialise on that and compile again for the real batch, so it must not.
@triton.jit(do_not_specialize=["stride_table"])
def _paged_prefill_kernel(
    out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr, query_start_ptr,
    scale_log2,
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_cblock, stride_cslot, stride_chead, stride_table,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_P: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    q_tile = tl.program_id(2)

    query_start = tl.load(query_start_ptr + seq)
    query_len = tl.load(query_start_ptr + seq + 1) - query_start
    if q_tile * BLOCK_Q >= query_len:  # the grid is sized for the longest query in the batch
        return
    seq_len = tl.load(seq_lens_ptr + seq)
    num_cached = seq_len - query_len  # tokens whose K/V were in the cache before this step

    # Row r of the tile is new token q_tile * BLOCK_Q + r // GROUP, query head r % GROUP of this KV head.
    rows = tl.arange(0, BLOCK_M)
    token = q_tile * BLOCK_Q + rows // GROUP
    head = kv_head * GROUP + rows % GROUP
    row_ok = (rows < BLOCK_Q * GROUP) & (token < query_len)
    dims = tl.arange(0, DIM_P)
    dim_ok = dims < HEAD_DIM
    q_offsets = (query_start + token)[:, None] * stride_qt + head[:, None] * stride_qh + dims[None, :]
    q = tl.load(q_ptr + q_offsets, mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    position = num_cached + token  # absolute position of each row's token

    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, DIM_P], tl.float32)

    # Keys past the tile's last token are masked for every row: stop there (causal skip).
    kv_end = tl.minimum(seq_len, num_cached + (q_tile + 1) * BLOCK_Q)
    for tile_start in range(0, kv_end, BLOCK_N):
        keys = tile_start + tl.arange(0, BLOCK_N)
        key_ok = keys < kv_end
        blocks = tl.load(block_tables_ptr + seq * stride_table + keys // BLOCK_SIZE, mask=key_ok, other=0)
        kv_rows = blocks.to(tl.int64) * stride_cblock + (keys % BLOCK_SIZE) * stride_cslot + kv_head * stride_chead
        kv_mask = key_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_cache_ptr + kv_rows[:, None] + dims[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_cache_ptr + kv_rows[:, None] + dims[None, :], mask=kv_mask, other=0.0)

        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2  # [BLOCK_M, BLOCK_N]
        visible = (keys[None, :] <= position[:, None]) & key_ok[None, :]  # causal, in absolute positions
        scores = tl.where(visible, scores, float("-inf"))
        # Key 0 is visible to every row, so m is finite from the first tile on (no NaN).
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        p = tl.exp2(scores - m_new[:, None])
        alpha = tl.exp2(m - m_new)
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m = m_new

    o = acc / l[:, None]
    o_offsets = (query_start + token)[:, None] * stride_ot + head[:, None] * stride_oh + dims[None, :]
    tl.store(out_ptr + o_offsets, o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


def paged_prefill(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    query_start_loc: torch.Tensor,
    max_query_len: int,
    scale: float,
    block_m: int = 128,
    block_n: int = 32,
    num_warps: int = 4,
    num_stages: int = 3,
) -> torch.Tensor:
    """Causal attention of each sequence's new tokens over its whole paged context.

    Args:
        query: ``[T, num_heads, head_dim]``, the new tokens of all sequences, concatenated.
        k_cache, v_cache: ``[num_blocks, block_size, num_kv_heads, head_dim]`` holding every
            context token, this step's included; ``block_size`` a power of two.
        block_tables: int32 ``[B, max_blocks]``; seq_lens: int32 ``[B]``;
        query_start_loc: int32 ``[B + 1]`` (``cu_seqlens_q``); max_query_len: Python int (grid size).
        scale: softmax scale. block_m (rows: tokens x grouped heads), block_n, num_warps,
            num_stages: tuning knobs; the defaults were the fastest of the H200 sweep in
            ``experiments/decode_bandwidth.py`` (bf16, Qwen3-0.6B heads, 1k-token prompts).

    Returns:
        ``[T, num_heads, head_dim]`` in ``query.dtype``.
    """
    num_heads, head_dim = query.shape[1:]
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    assert query.stride(-1) == 1 and k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1
    block_m = max(block_m, triton.next_power_of_2(group))
    block_q = block_m // group
    out = torch.empty_like(query)
    grid = (seq_lens.shape[0], num_kv_heads, triton.cdiv(max_query_len, block_q))
    _paged_prefill_kernel[grid](
        out, query, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale * LOG2E,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        GROUP=group, HEAD_DIM=head_dim, DIM_P=triton.next_power_of_2(head_dim),
        BLOCK_SIZE=k_cache.shape[1], BLOCK_Q=block_q, BLOCK_M=block_m, BLOCK_N=block_n,
        DOT_PRECISION="ieee" if query.dtype == torch.float32 else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
