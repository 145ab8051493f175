"""Block hashing: vLLM's automatic prefix caching, as in nano-vLLM.

Every *full* block of a sequence gets a chained hash: ``hash(parent_hash, tokens of
the block)``, so the hash of block ``i`` names the whole prefix ``0 .. i``. A table
maps hash -> cached block. A new request walks its prompt block by block, looks each
hash up and stops at the first miss: the blocks before it are shared by reference
count instead of recomputed (vLLM docs, "Automatic Prefix Caching"; Kwon et al.,
SOSP 2023, section 4.4 on sharing).

The hash is only an index, never a proof. A hit also requires the stored tokens to
equal the request's and the stored parent to be the very entry matched for the
previous block, so a hash collision can never serve the KV of another prefix.
Parents are named by an entry id that is never reused (block ids are reused after
eviction, so they could not tell an old parent from a new one).

Limit of the design: only whole blocks are shared. Two prompts that diverge in the
middle of a block share nothing of that block, and a prompt shorter than a block
shares nothing at all.
"""

from __future__ import annotations

import itertools
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import xxhash

from .base import PrefixCache

if TYPE_CHECKING:
    from ..block_allocator import BlockAllocator
    from ..sequence import Sequence

ROOT_HASH = 0
ROOT_ENTRY = 0  # the parent entry id of every sequence's first block


def block_hash(parent_hash: int, token_ids: tuple[int, ...]) -> int:
    """64-bit xxh3 of the parent's hash followed by the block's token ids (int64 each)."""
    return xxhash.xxh3_64_intdigest(parent_hash.to_bytes(8, "little") + array("q", token_ids).tobytes())


@dataclass
class CachedBlock:
    """One physical block the table indexes, with what proves a hit on it."""

    block_id: int
    entry_id: int  # unique for the cache's lifetime
    parent_entry_id: int  # entry of the previous block of the same prefix, ROOT_ENTRY for the first
    token_ids: tuple[int, ...]
    block_hash: int


@dataclass
class SequenceProgress:
    """How far a running sequence's blocks have been published."""

    num_hashed_blocks: int = 0
    last_hash: int = ROOT_HASH
    last_entry_id: int | None = ROOT_ENTRY  # None: a collision broke the chain; publish no more


class HashPrefixCache(PrefixCache):
    """Hash table of full blocks, shared by reference count, evicted LRU.

    State: ``table`` (hash -> :class:`CachedBlock`), ``by_block`` (block id -> the
    same entries), ``evictable`` (cached blocks only the cache holds, least recently
    released first) and per-sequence :class:`SequenceProgress`.
    Per step the cost is O(1) per sequence plus O(block_size) per block that filled.
    """

    def __init__(self, allocator: BlockAllocator, block_size: int) -> None:
        super().__init__(allocator, block_size)
        self.table: dict[int, CachedBlock] = {}
        self.by_block: dict[int, CachedBlock] = {}
        self.evictable: OrderedDict[int, None] = OrderedDict()
        self.progress: dict[int, SequenceProgress] = {}
        self._entry_ids = itertools.count(ROOT_ENTRY + 1)

    def _block_tokens(self, token_ids: list[int], index: int) -> tuple[int, ...]:
        return tuple(token_ids[index * self.block_size : (index + 1) * self.block_size])

    def _lookup(self, parent_hash: int, parent_entry_id: int, tokens: tuple[int, ...]) -> tuple[int, CachedBlock | None]:
        """The hash of ``tokens`` after ``parent_hash``, and the cached entry if it is a
        verified hit (same tokens on top of the same parent entry)."""
        h = block_hash(parent_hash, tokens)
        entry = self.table.get(h)
        if entry is not None and (entry.token_ids != tokens or entry.parent_entry_id != parent_entry_id):
            entry = None
        return h, entry

    def match(self, seq_id: int, token_ids: list[int]) -> list[int]:
        progress, pages = SequenceProgress(), []
        for index in range(self.max_cacheable_tokens(len(token_ids)) // self.block_size):
            h, entry = self._lookup(progress.last_hash, progress.last_entry_id, self._block_tokens(token_ids, index))
            if entry is None:
                break
            self.evictable.pop(entry.block_id, None)  # in use again
            self.allocator.incref(entry.block_id)
            pages.append(entry.block_id)
            progress = SequenceProgress(index + 1, h, entry.entry_id)
        self.progress[seq_id] = progress
        return pages

    def cache(self, seq: Sequence, num_new_tokens: int) -> dict[int, int]:
        progress = self.progress[seq.seq_id]
        num_full = seq.num_computed_tokens // self.block_size
        while progress.num_hashed_blocks < num_full and progress.last_entry_id is not None:
            index = progress.num_hashed_blocks
            tokens = self._block_tokens(seq.token_ids, index)
            h = block_hash(progress.last_hash, tokens)
            entry = self.table.get(h)
            if entry is None:  # first time this prefix is seen: index our block
                block_id = seq.block_table[index]
                entry = CachedBlock(block_id, next(self._entry_ids), progress.last_entry_id, tokens, h)
                self.table[h] = self.by_block[block_id] = entry
                self.allocator.incref(block_id)  # the cache's own reference
            elif entry.token_ids != tokens or entry.parent_entry_id != progress.last_entry_id:
                progress.last_entry_id = None  # hash taken by another prefix: stop publishing this sequence
                break
            # else: another request published this prefix first; our copy stays private.
            progress.num_hashed_blocks, progress.last_hash, progress.last_entry_id = index + 1, h, entry.entry_id
        return {}

    def release(self, seq: Sequence) -> None:
        self.cache(seq, 0)
        # Tail blocks first, so that they are evicted before the prefix blocks.
        for block_id in reversed(seq.block_table):
            self.allocator.decref(block_id)
            if block_id in self.by_block and self.allocator.ref_counts[block_id] == 1:
                self.evictable[block_id] = None
        del self.progress[seq.seq_id]

    @property
    def num_evictable_blocks(self) -> int:
        return len(self.evictable)

    def evict(self, num_blocks: int) -> None:
        for _ in range(num_blocks):
            block_id, _ = self.evictable.popitem(last=False)
            entry = self.by_block.pop(block_id)
            del self.table[entry.block_hash]
            self.allocator.decref(block_id)
