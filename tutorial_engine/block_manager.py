"""Paged KV-cache bookkeeping: a block (page) allocator and per-sequence block tables.

Follows PagedAttention (Kwon et al., SOSP 2023, section 4.2): the KV cache is cut
into fixed-size blocks of ``block_size`` token slots; a sequence owns a *block table*
(list of physical block ids) so its cache need not be contiguous. Slot ``s`` of the
flat cache is token ``s % block_size`` of block ``s // block_size``.

Blocks carry reference counts (:class:`~tutorial_engine.block_allocator.BlockAllocator`)
so that sequences with a common prefix can share one physical block without copying:
the prefix cache (:mod:`tutorial_engine.prefix_cache`) decides which blocks are shared,
and this manager asks it to evict unused cached blocks when the free list runs dry.

One owner: only this manager writes a sequence's block table and its count of
computed tokens; the scheduler and the prefix caches ask it to.
"""

from __future__ import annotations

from .block_allocator import BlockAllocator
from .config import PrefixCachingMode
from .prefix_cache import PrefixCache, make_prefix_cache
from .sequence import Sequence


class KVCacheManager:
    """Grows and frees the block tables of sequences, sharing cached prefixes.

    Args:
        num_blocks: physical blocks in the KV cache (``num_kvcache_blocks``).
        block_size: token slots per block (``kvcache_block_size``).
        prefix_caching: "none", "hash" or "radix" (see :func:`make_prefix_cache`).
    """

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: PrefixCachingMode = "none") -> None:
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
        if self.prefix_cache is None:
            return 0
        seq.block_table.extend(self.prefix_cache.match(seq.seq_id, seq.token_ids))
        seq.num_computed_tokens = len(seq.block_table) * self.block_size
        return seq.num_computed_tokens

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

    def advance(self, seq: Sequence, num_new_tokens: int) -> None:
        """A step that computes the next ``num_new_tokens`` tokens of ``seq`` was planned:
        count them as computed (their slots were reserved by :meth:`allocate_slots`).
        The step's own result may arrive later; nothing reads these K/V before it runs,
        because later steps run after it on the same device stream."""
        seq.num_computed_tokens += num_new_tokens

    def cache_blocks(self, seq: Sequence, num_new_tokens: int) -> None:
        """After a step computed ``num_new_tokens`` of ``seq`` (its tokens are known):
        let the prefix cache publish the blocks that became full."""
        if self.prefix_cache is not None:
            for index, page in self.prefix_cache.cache(seq, num_new_tokens).items():
                seq.block_table[index] = page

    def rollback(self, seq: Sequence, num_computed_tokens: int) -> None:
        """A verify step rejected proposals: keep ``num_computed_tokens`` computed (the
        rows' accepted prefix) and free the blocks wholly past them, tail first. Those
        blocks were allocated for the proposals and never published: the prefix cache
        takes only full blocks of computed tokens, and this runs before it looks."""
        if num_computed_tokens > seq.num_computed_tokens:
            raise ValueError(f"rollback to {num_computed_tokens} computed tokens, but only "
                             f"{seq.num_computed_tokens} are computed.")
        seq.num_computed_tokens = num_computed_tokens
        num_kept = -(-num_computed_tokens // self.block_size)
        while len(seq.block_table) > num_kept:
            self.allocator.decref(seq.block_table.pop())

    def forget_computed(self, seq: Sequence, num_tokens: int) -> None:
        """The steps that computed ``seq``'s tokens from ``num_tokens`` on failed: count
        only the first ``num_tokens`` as computed, so no page holding unwritten K/V is
        ever published to the prefix cache."""
        seq.num_computed_tokens = min(seq.num_computed_tokens, num_tokens)

    def free(self, seq: Sequence) -> None:
        """Release every block of ``seq``, tail first (so the tail is reused first),
        and reset its computed tokens; with a prefix cache its computed blocks stay
        cached until evicted. Only tokens whose ids are known are published: a request
        aborted with a step in flight counts its still-unknown input as computed."""
        seq.num_computed_tokens = min(seq.num_computed_tokens, seq.num_tokens)
        if self.prefix_cache is not None:
            self.prefix_cache.release(seq)
        else:
            for block_id in reversed(seq.block_table):
                self.allocator.decref(block_id)
        seq.block_table.clear()
        seq.num_computed_tokens = 0

