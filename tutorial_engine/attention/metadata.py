"""What every attention backend needs to know about the current batch."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F


@dataclass
class AttentionMetadata:
    """The flattened batch of one engine step.

    A step runs ``B`` sequences; sequence ``i`` contributes ``query_len[i]`` new
    tokens (a whole prompt, a prefill chunk, or 1 decode token) that attend to its
    ``seq_len[i]`` tokens of context (cached + new). All new tokens of the step are
    concatenated into ``T = sum(query_len)`` rows (vLLM's "varlen" layout).

    Attributes:
        slot_mapping: int64 ``[T]``, flat KV-cache slot where each new token's K/V goes.
        query_start_loc: int32 ``[B + 1]``, prefix sums of query lengths (``cu_seqlens_q``).
        seq_lens: int32 ``[B]``, context length of each sequence after this step.
        block_tables: int32 ``[B, max_blocks]``, physical block ids, padded with 0.
        max_query_len, max_seq_len: Python ints, for kernel launch shapes.
        query_start_loc_cpu, seq_lens_cpu: the same lengths as Python lists, so the
            reference backend can loop without device syncs.
    """

    slot_mapping: torch.Tensor
    query_start_loc: torch.Tensor
    seq_lens: torch.Tensor
    block_tables: torch.Tensor
    max_query_len: int
    max_seq_len: int
    query_start_loc_cpu: list[int]
    seq_lens_cpu: list[int]

    @cached_property
    def seq_start_loc(self) -> torch.Tensor:
        """int32 ``[B + 1]``, prefix sums of ``seq_lens`` (FlashAttention's ``cu_seqlens_k``).

        Built on first use and kept for the rest of the step, so every layer shares one.
        """
        return F.pad(self.seq_lens.cumsum(0, dtype=torch.int32), (1, 0))

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def is_decode_only(self) -> bool:
        """Every sequence adds exactly one token: the decode fast path (and CUDA graphs)."""
        return self.max_query_len == 1
