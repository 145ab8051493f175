"""RadixAttention's cache policy (SGLang, Zheng et al., NeurIPS 2024) on our blocks.

The :class:`~.radix_tree.RadixTree` does the data structure; this adapter ties it to
sequences and the block allocator, the way SGLang's scheduler uses its radix cache:

- admission: longest-prefix match, lock the matched path, share its blocks;
- after a prefill chunk: insert the blocks computed so far (so a request arriving
  while a long prompt is still being prefilled can already reuse its first chunks),
  adopt the tree's copy of any block another request inserted first (freeing ours),
  and move the lock to the new end of the path;
- finish or preemption: insert everything computed, unlock, drop the sequence's
  references; the blocks stay in the tree until evicted.

Decode steps insert nothing: a request's generated tokens enter the tree when it
finishes (or is preempted), which keeps the per-step cost of decoding at zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .base import PrefixCache
from .radix_tree import RadixNode, RadixTree

if TYPE_CHECKING:
    from ..block_allocator import BlockAllocator
    from ..sequence import Sequence


@dataclass
class LockedPath:
    """The tree path a running sequence holds locked: it ends at ``node`` and covers
    the sequence's first ``num_tokens`` tokens."""

    node: RadixNode
    num_tokens: int


class RadixPrefixCache(PrefixCache):
    """A radix tree of blocks, with SGLang's lock / insert / LRU-leaf-eviction policy."""

    def __init__(self, allocator: BlockAllocator, block_size: int) -> None:
        super().__init__(allocator, block_size)
        self.tree = RadixTree(block_size)
        self.paths: dict[int, LockedPath] = {}

    def match(self, seq_id: int, token_ids: list[int]) -> list[int]:
        blocks, node = self.tree.match_prefix(token_ids[: self.max_cacheable_tokens(len(token_ids))])
        self.tree.lock(node)
        for block in blocks:
            self.allocator.incref(block)
        self.paths[seq_id] = LockedPath(node, len(blocks) * self.block_size)
        return blocks

    def cache(self, seq: Sequence, num_new_tokens: int) -> dict[int, int]:
        if num_new_tokens > 1:  # a prefill chunk, not a decode step
            return self._insert(seq)
        return {}

    def _insert(self, seq: Sequence) -> dict[int, int]:
        """Insert ``seq``'s computed whole blocks and re-lock the path to their end.
        Returns the block-table entries to switch to the tree's copy."""
        num_blocks = seq.num_computed_tokens // self.block_size
        path = self.paths[seq.seq_id]
        if num_blocks * self.block_size <= path.num_tokens:
            return {}
        table = seq.block_table
        result = self.tree.insert(seq.token_ids[: num_blocks * self.block_size], table[:num_blocks])
        num_existing = result.num_existing_tokens // self.block_size
        switched = {}
        for i in range(num_existing):
            if result.blocks[i] != table[i]:  # another request inserted this prefix first
                self.allocator.incref(result.blocks[i])
                self.allocator.decref(table[i])
                switched[i] = result.blocks[i]
        for block in table[num_existing:num_blocks]:
            self.allocator.incref(block)  # the tree's own reference to the blocks it adopted
        self.tree.lock(result.node)
        self.tree.unlock(path.node)
        self.paths[seq.seq_id] = LockedPath(result.node, num_blocks * self.block_size)
        return switched

    def release(self, seq: Sequence) -> None:
        switched = self._insert(seq)
        self.tree.unlock(self.paths.pop(seq.seq_id).node)
        for i in reversed(range(len(seq.block_table))):
            self.allocator.decref(switched.get(i, seq.block_table[i]))

    @property
    def num_evictable_blocks(self) -> int:
        return self.tree.evictable_size

    def evict(self, num_blocks: int) -> None:
        for block in self.tree.evict(num_blocks):
            self.allocator.decref(block)
