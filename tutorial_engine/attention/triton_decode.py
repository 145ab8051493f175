"""Paged decode attention in Triton: one new token per sequence, context in pages.

Decode is memory-bound: each step reads every cached K/V byte once and does ~2 FLOPs
per byte, so the kernel is designed around reading the cache once, as fast as HBM allows.

* Grouped-query aware: one program serves one KV head and *all* query heads that share
  it (GQA, Ainslie et al., 2023), so each page is read once, not once per query head.
* Paged: token ``t`` of a sequence lives in physical block ``block_table[t // BLOCK_SIZE]``
  at row ``t % BLOCK_SIZE`` (PagedAttention, Kwon et al., SOSP 2023, section 4.1).
* Split-K ("Flash-Decoding", Dao et al., 2023): with few sequences there are too few
  (sequence, KV head) programs to fill the GPU, so each context is cut into
  ``num_splits`` ranges attended in parallel; a second kernel merges the partial
  results with their log-sum-exp weights.

Graph safe: lengths and block tables are read on the device, the grid depends only on
the batch size, the KV heads and ``num_splits``, and the kernel is correct for any
``num_splits >= 1`` (it only changes speed), so a captured CUDA graph replays correctly
for any context length.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634  # exp(x) = exp2(x * log2(e)); exp2 is the GPU's native instruction


# The block table's row stride is 1 when one sequence fits one page (a warm-up); Triton
# would specialise on that and compile again for the real batch, so it must not.
@triton.jit(do_not_specialize=["stride_table"])
def _paged_decode_kernel(
    out_ptr, part_out_ptr, part_lse_ptr,  # out: [B, H, D]; partials: [B, H, S, D] and [B, H, S] (float32)
    q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr,
    scale_log2,  # softmax scale * log2(e)
    stride_qt, stride_qh, stride_ot, stride_oh,
    stride_cblock, stride_cslot, stride_chead,  # cache: [num_blocks, BLOCK_SIZE, kv_heads, D]
    stride_table,
    GROUP: tl.constexpr, GROUP_P: tl.constexpr,  # query heads per KV head; padded to >= 16 for tl.dot
    HEAD_DIM: tl.constexpr, DIM_P: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,  # tokens per KV-cache page
    BLOCK_N: tl.constexpr,  # context tokens per loop iteration
    NUM_SPLITS: tl.constexpr,
    DOT_PRECISION: tl.constexpr,  # "ieee" keeps float32 exact; ignored for bf16/fp16
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)

    # This split's range of context tokens, in whole BLOCK_N tiles.
    seq_len = tl.load(seq_lens_ptr + seq)
    tiles_per_split = tl.cdiv(tl.cdiv(seq_len, BLOCK_N), NUM_SPLITS)
    start = split * tiles_per_split * BLOCK_N
    end = tl.minimum(seq_len, start + tiles_per_split * BLOCK_N)

    # The GROUP query heads of this KV head, as rows of one [GROUP_P, HEAD_DIM] tile.
    heads = kv_head * GROUP + tl.arange(0, GROUP_P)
    head_ok = tl.arange(0, GROUP_P) < GROUP
    dims = tl.arange(0, DIM_P)
    dim_ok = dims < HEAD_DIM
    q = tl.load(q_ptr + seq * stride_qt + heads[:, None] * stride_qh + dims[None, :],
                mask=head_ok[:, None] & dim_ok[None, :], other=0.0)

    # Online softmax state per query head (FlashAttention, Dao et al., 2022).
    m = tl.full([GROUP_P], float("-inf"), tl.float32)  # running max of scores (log2 units)
    l = tl.zeros([GROUP_P], tl.float32)  # running sum of exp2(score - m)
    acc = tl.zeros([GROUP_P, DIM_P], tl.float32)  # running sum of weights * V

    for tile_start in range(start, end, BLOCK_N):
        tokens = tile_start + tl.arange(0, BLOCK_N)
        token_ok = tokens < end
        # Page lookup: logical token -> physical block -> row offset in the cache.
        blocks = tl.load(block_tables_ptr + seq * stride_table + tokens // BLOCK_SIZE, mask=token_ok, other=0)
        rows = blocks.to(tl.int64) * stride_cblock + (tokens % BLOCK_SIZE) * stride_cslot + kv_head * stride_chead
        kv_mask = token_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_cache_ptr + rows[:, None] + dims[None, :], mask=kv_mask, other=0.0)  # [BLOCK_N, D]
        v = tl.load(v_cache_ptr + rows[:, None] + dims[None, :], mask=kv_mask, other=0.0)

        scores = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale_log2  # [GROUP_P, BLOCK_N]
        scores = tl.where(token_ok[None, :], scores, float("-inf"))
        m_new = tl.maximum(m, tl.max(scores, axis=1))
        p = tl.exp2(scores - m_new[:, None])
        alpha = tl.exp2(m - m_new)  # rescales what was accumulated under the old max
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m = m_new

    has_tokens = l > 0  # false for an empty split (or a zero-length padding row)
    l = tl.where(has_tokens, l, 1.0)
    o = acc / l[:, None]
    store_mask = head_ok[:, None] & dim_ok[None, :]
    if NUM_SPLITS == 1:
        tl.store(out_ptr + seq * stride_ot + heads[:, None] * stride_oh + dims[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=store_mask)
    else:
        part = (seq * tl.num_programs(1) * GROUP + heads) * NUM_SPLITS + split  # [B, H, S] index; H = kv heads * GROUP
        tl.store(part_out_ptr + part[:, None] * HEAD_DIM + dims[None, :], o, mask=store_mask)
        tl.store(part_lse_ptr + part, tl.where(has_tokens, m + tl.log2(l), float("-inf")), mask=head_ok)


@triton.jit
def _merge_splits_kernel(
    out_ptr, part_out_ptr, part_lse_ptr, stride_ot, stride_oh,
    NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, DIM_P: tl.constexpr, NUM_SPLITS: tl.constexpr,
):
    """out = sum_s w_s * o_s / sum_s w_s with w_s = exp2(lse_s - max lse): the exact softmax."""
    seq = tl.program_id(0)
    head = tl.program_id(1)
    splits = tl.arange(0, NUM_SPLITS)
    dims = tl.arange(0, DIM_P)
    part = (seq * NUM_HEADS + head) * NUM_SPLITS + splits
    lse = tl.load(part_lse_ptr + part)
    top = tl.max(lse, axis=0)
    top = tl.where(top == float("-inf"), 0.0, top)  # every split empty: weights all 0, output 0
    w = tl.exp2(lse - top)
    o = tl.load(part_out_ptr + part[:, None] * HEAD_DIM + dims[None, :], mask=dims[None, :] < HEAD_DIM, other=0.0)
    total = tl.sum(w, axis=0)
    merged = tl.sum(w[:, None] * o, axis=0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + seq * stride_ot + head * stride_oh + dims, merged.to(out_ptr.dtype.element_ty),
             mask=dims < HEAD_DIM)


def paged_decode(
    query: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    num_splits: int = 1,
    block_n: int = 64,
    num_warps: int = 4,
    num_stages: int = 2,
) -> torch.Tensor:
    """Attention of one new token per sequence over its paged context.

    Args:
        query: ``[B, num_heads, head_dim]`` (token ``i`` belongs to sequence ``i``).
        k_cache, v_cache: ``[num_blocks, block_size, num_kv_heads, head_dim]``, holding
            this step's K/V already; ``block_size`` a power of two.
        block_tables: int32 ``[B, max_blocks]``; seq_lens: int32 ``[B]`` (context incl. the new token).
        scale: softmax scale. num_splits: context ranges per sequence (a power of two;
            correctness does not depend on it). block_n, num_warps, num_stages: tuning knobs.

    Returns:
        ``[B, num_heads, head_dim]`` in ``query.dtype``.
    """
    num_seqs, num_heads, head_dim = query.shape
    num_kv_heads = k_cache.shape[2]
    group = num_heads // num_kv_heads
    if num_splits < 1 or num_splits & (num_splits - 1):
        raise ValueError(f"num_splits={num_splits} must be a power of two >= 1")
    assert query.stride(-1) == 1 and k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1
    out = torch.empty_like(query)
    if num_splits > 1:
        part_out = torch.empty(num_seqs, num_heads, num_splits, head_dim, dtype=torch.float32, device=query.device)
        part_lse = torch.empty(num_seqs, num_heads, num_splits, dtype=torch.float32, device=query.device)
    else:
        part_out = part_lse = out  # unused by the kernel when NUM_SPLITS == 1
    _paged_decode_kernel[(num_seqs, num_kv_heads, num_splits)](
        out, part_out, part_lse, query, k_cache, v_cache, block_tables, seq_lens, scale * LOG2E,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        GROUP=group, GROUP_P=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim, DIM_P=triton.next_power_of_2(head_dim),
        BLOCK_SIZE=k_cache.shape[1], BLOCK_N=block_n, NUM_SPLITS=num_splits,
        DOT_PRECISION="ieee" if query.dtype == torch.float32 else "tf32",
        num_warps=num_warps, num_stages=num_stages,
    )
    if num_splits > 1:
        _merge_splits_kernel[(num_seqs, num_heads)](
            out, part_out, part_lse, out.stride(0), out.stride(1),
            NUM_HEADS=num_heads, HEAD_DIM=head_dim, DIM_P=triton.next_power_of_2(head_dim), NUM_SPLITS=num_splits,
        )
    return out
