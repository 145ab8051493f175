"""The interface the KV-cache manager uses to share pages between requests.

A prefix cache remembers which physical KV pages hold which token prefixes, so a new
request whose prompt starts the same way points its block table at those pages
instead of recomputing them. Two designs implement it: block hashing
(:mod:`.hash_cache`, vLLM / nano-vLLM) and a radix tree (:mod:`.radix_cache`, SGLang).

Ownership rule shared by both: the cache holds one reference (in the
:class:`~tutorial_engine.block_manager.BlockAllocator`) on every page it indexes, and
every sequence holds one on each page of its block table. A cached page that no
sequence uses is *evictable*: it stays reusable until the allocator runs out of free
pages and the manager asks the cache to :meth:`~PrefixCache.evict` some.

The cache reads sequences but never writes them: the KV-cache manager alone owns block
tables and computed-token counts, and applies what the cache returns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..block_allocator import BlockAllocator
    from ..sequence import Sequence


class PrefixCache(ABC):
    """One prefix cache over the pages of ``allocator``.

    Args:
        allocator: the page allocator whose reference counts the cache shares.
        block_size: tokens per page (``kvcache_block_size``); only whole pages are
            shared, because a page is the unit a block table can point at.
    """

    def __init__(self, allocator: BlockAllocator, block_size: int) -> None:
        self.allocator = allocator
        self.block_size = block_size

    def max_cacheable_tokens(self, num_tokens: int) -> int:
        """Whole pages within the first ``num_tokens - 1`` tokens: at least one token
        is always computed, because the last token's logits give the next token."""
        return (num_tokens - 1) // self.block_size * self.block_size

    @abstractmethod
    def match(self, seq_id: int, token_ids: list[int]) -> list[int]:
        """Admission of sequence ``seq_id``: the pages of the longest cached prefix of
        ``token_ids`` (at most :meth:`max_cacheable_tokens`), with a reference taken on
        each for the sequence. Its block table starts with them."""

    @abstractmethod
    def cache(self, seq: Sequence, num_new_tokens: int) -> dict[int, int]:
        """After a step computed ``num_new_tokens`` more tokens of ``seq``: publish the
        pages that became full, so that other requests can match them.

        Returns block-table entries the sequence must switch to, ``{index: page}``
        (the references are already moved), when the cache already held a copy."""

    @abstractmethod
    def release(self, seq: Sequence) -> None:
        """Finish or preemption: publish what ``seq`` computed and drop its reference
        on every page of its block table (the manager then clears the table). Its
        cached pages stay, evictable once unused."""

    @property
    @abstractmethod
    def num_evictable_blocks(self) -> int:
        """Cached pages no sequence uses: free for reuse after :meth:`evict`."""

    @abstractmethod
    def evict(self, num_blocks: int) -> None:
        """Return at least ``num_blocks`` least recently used evictable pages to the
        allocator's free list (callers never ask for more than are evictable)."""
