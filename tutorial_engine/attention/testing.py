"""Random paged batches for testing and measuring attention backends.

Builds what the model runner would hand a backend in one step: a KV cache whose pages
are scattered in random order (so wrong page arithmetic cannot pass by luck), the new
tokens' Q/K/V, and the :class:`AttentionMetadata` describing the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .metadata import AttentionMetadata


@dataclass
class PagedBatch:
    """One step's attention inputs. ``query`` ``[T, H, D]``; ``key``/``value`` ``[T, H_kv, D]``
    (this step's new K/V, not yet stored); caches ``[num_blocks, block_size, H_kv, D]``."""

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    meta: AttentionMetadata

    @property
    def scale(self) -> float:
        return self.query.shape[-1] ** -0.5


def random_paged_batch(
    query_lens: list[int],
    seq_lens: list[int],
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    spare_blocks: int = 3,
) -> PagedBatch:
    """A random batch where sequence ``i`` adds ``query_lens[i]`` tokens to reach ``seq_lens[i]``.

    Raises:
        ValueError: when a query is empty or longer than its sequence, or the lists differ in length.
    """
    if len(query_lens) != len(seq_lens) or not query_lens:
        raise ValueError(f"need one query length per sequence; got {len(query_lens)} and {len(seq_lens)}")
    for q, s in zip(query_lens, seq_lens):
        if not 1 <= q <= s:
            raise ValueError(f"query_len={q} must be in 1..seq_len={s}")
    gen = torch.Generator().manual_seed(seed)
    blocks_per_seq = [-(-s // block_size) for s in seq_lens]
    num_blocks = sum(blocks_per_seq) + spare_blocks
    physical = torch.randperm(num_blocks, generator=gen).tolist()  # pages in scattered order
    tables, taken = [], 0
    for n in blocks_per_seq:
        tables.append(physical[taken : taken + n])
        taken += n
    width = max(blocks_per_seq)
    slots = [
        tables[i][p // block_size] * block_size + p % block_size
        for i, (q, s) in enumerate(zip(query_lens, seq_lens))
        for p in range(s - q, s)
    ]
    total = sum(query_lens)

    values_gen = torch.Generator(device=device).manual_seed(seed)  # drawn on the device: fast for GiB caches

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=values_gen, device=device, dtype=dtype)

    def ints(values: list, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device)

    starts = [0]
    for q in query_lens:
        starts.append(starts[-1] + q)
    meta = AttentionMetadata(
        slot_mapping=ints(slots, torch.int64),
        query_start_loc=ints(starts, torch.int32),
        seq_lens=ints(seq_lens, torch.int32),
        block_tables=ints([t + [0] * (width - len(t)) for t in tables], torch.int32),
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
        query_start_loc_cpu=starts,
        seq_lens_cpu=list(seq_lens),
    )
    return PagedBatch(
        query=randn(total, num_heads, head_dim),
        key=randn(total, num_kv_heads, head_dim),
        value=randn(total, num_kv_heads, head_dim),
        k_cache=randn(num_blocks, block_size, num_kv_heads, head_dim),
        v_cache=randn(num_blocks, block_size, num_kv_heads, head_dim),
        meta=meta,
    )
