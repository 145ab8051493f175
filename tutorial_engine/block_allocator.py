"""The page (block) allocator under the KV-cache manager and the prefix caches.

PagedAttention (Kwon et al., SOSP 2023, section 4.2) cuts the KV cache into blocks of
``block_size`` token slots. This allocator only hands out block ids and counts how many
holders (sequences, and a prefix cache) reference each block; which tokens a block
holds is the business of the :class:`~tutorial_engine.block_manager.KVCacheManager`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


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
            raise RuntimeError("out of KV-cache blocks: allocate only after KVCacheManager.allocate_slots has checked num_free_blocks")
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
