"""Paged KV-cache bookkeeping: a block (page) allocator and per-sequence block tables.

Follows PagedAttention (Kwon et al., SOSP 2023, section 4.2): the KV cache is cut
into fixed-size blocks of ``block_size`` token slots; a sequence owns a *block table*
(list of physical block ids) so its cache need not be contiguous. Slot ``s`` of the
flat cache is token ``s % block_size`` of block ``s // block_size``.

Blocks carry reference counts so that sequences with a common prefix can share one
physical block without copying: the prefix cache (:mod:`tutorial_engine.prefix_cache`)
decides which blocks are shared, and this manager asks it to evict unused cached
blocks when the free list runs dry.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .prefix_cache import PrefixCache, make_prefix_cache
from .sequence import Sequence


@dataclass
class BlockAllocator:
    """Hands out physical block ids and tracks how many sequences hold each.

    Invariants (property-tested): a block is either free (ref count 0, in the free
    queue exactly once) or in use (ref count >= 1, not in the free queue).
    """

    num_blocks: int
    free_block_ids: deque[int] = field(init=False)
    ref_counts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.free_block_ids = deque(range(self.num_blocks))
        self.ref_counts = [0] * self.num_blocks

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    def allocate(self) -> int:
        """Take a free block; its ref count becomes 1. Raises RuntimeError when none is free."""
        if not self.free_block_ids:
            raise RuntimeError("out of KV-cache blocks; the scheduler must check can_allocate first")
        block_id = self.free_block_ids.popleft()
        self.ref_counts[block_id] = 1
        return block_id

    def incref(self, block_id: int) -> None:
        """Share an in-use block with one more sequence."""
        if self.ref_counts[block_id] <= 0:
            raise RuntimeError(f"block {block_id} is free; cannot share it")
        self.ref_counts[block_id] += 1

    def decref(self, block_id: int) -> bool:
        """Drop one reference; returns True when the block became free."""
        if self.ref_counts[block_id] <= 0:
            raise RuntimeError(f"block {block_id} freed twice")
        self.ref_counts[block_id] -= 1
        if self.ref_counts[block_id] == 0:
            self.free_block_ids.append(block_id)
            return True
        return False


class KVCacheManager:
    """Grows and frees the block tables of sequences, sharing cached prefixes.

    Args:
        num_blocks: physical blocks in the KV cache (``num_kvcache_blocks``).
        block_size: token slots per block (``kvcache_block_size``).
        prefix_caching: "none", "hash" or "radix" (see :func:`make_prefix_cache`).
    """

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: str = "none") -> None:
        self.block_size = block_size
        self.allocator = BlockAllocator(num_blocks)
        self.prefix_cache: PrefixCache | None = make_prefix_cache(prefix_caching, self.allocator, block_size)

    @property
    def num_free_blocks(self) -> int:
        """Blocks a sequence can get now: free ones plus cached ones nobody uses."""
        evictable = self.prefix_cache.num_evictable_blocks if self.prefix_cache is not None else 0
        return self.allocator.num_free_blocks + evictable

    def num_blocks_needed(self, seq: Sequence, num_new_tokens: int) -> int:
        """Extra blocks ``seq`` needs to hold ``num_new_tokens`` more K/V entries."""
        total = seq.num_computed_tokens + num_new_tokens
        return max(0, -(-total // self.block_size) - len(seq.block_table))

    def match_prefix(self, seq: Sequence) -> int:
        """On admission (empty block table): reuse the cached blocks of ``seq``'s longest
        cached prefix. Sets ``seq.block_table`` and ``seq.num_computed_tokens``;
        returns the tokens served from the cache (0 without a prefix cache)."""
        return self.prefix_cache.match(seq) if self.prefix_cache is not None else 0

    def allocate_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make room for ``num_new_tokens`` tokens after the computed ones, evicting
        unused cached blocks if the free list is short.

        Returns False (and allocates nothing) when too few blocks are free.
        """
        needed = self.num_blocks_needed(seq, num_new_tokens)
        if needed > self.num_free_blocks:
            return False
        shortfall = needed - self.allocator.num_free_blocks
        if shortfall > 0:
            self.prefix_cache.evict(shortfall)
        seq.block_table.extend(self.allocator.allocate() for _ in range(needed))
        return True

    def cache_blocks(self, seq: Sequence, num_new_tokens: int) -> None:
        """After a step computed ``num_new_tokens`` of ``seq``: let the prefix cache
        publish the blocks that became full."""
        if self.prefix_cache is not None:
            self.prefix_cache.cache(seq, num_new_tokens)

    def free(self, seq: Sequence) -> None:
        """Release every block of ``seq``, tail first (so the tail is reused first);
        with a prefix cache its computed blocks stay cached until evicted."""
        if self.prefix_cache is not None:
            self.prefix_cache.release(seq)
            return
        for block_id in reversed(seq.block_table):
            self.allocator.decref(block_id)
        seq.block_table.clear()

    def slot(self, seq: Sequence, position: int) -> int:
        """Flat cache slot of token ``position`` of ``seq``."""
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size
