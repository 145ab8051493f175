"""A radix tree over token ids whose nodes own KV blocks: SGLang's RadixAttention
(Zheng et al., "SGLang: Efficient Execution of Structured Language Model Programs",
NeurIPS 2024, section 3).

Each edge is labelled with a run of tokens (``node.key``) and owns the KV blocks of
those tokens (``node.blocks``); the path from the root to a node spells a prefix
that some request computed. Matching a prompt walks down from the root; inserting a
computed prompt adds the unmatched rest as one new leaf, splitting a node where the
new key leaves its edge half-way. Nodes on the paths of running requests are locked
(``lock_ref`` > 0); unlocked leaves are evicted least recently used first.

Granularity: one block. Our KV cache is paged (``kvcache_block_size`` tokens per
block) and a block table can only point at whole blocks, so every key length, match
length and split point is a multiple of ``block_size``; children are keyed by their
first block of tokens. With ``block_size=1`` this is the token-granular tree of the
SGLang paper. The tree itself never touches the allocator: it stores block ids, and
:meth:`RadixTree.evict` returns the blocks it gave up.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(eq=False)
class RadixNode:
    """One edge of the tree and the blocks holding its tokens' KV.

    ``len(key) == len(blocks) * block_size``; ``last_access`` is a logical clock
    (deterministic, unlike wall time); ``node_id`` breaks LRU ties in creation order.
    """

    key: list[int]
    blocks: list[int]
    parent: RadixNode | None = None
    children: dict[tuple[int, ...], RadixNode] = field(default_factory=dict)
    lock_ref: int = 0
    last_access: int = 0
    node_id: int = 0


class InsertResult(NamedTuple):
    """``num_existing_tokens`` of the key were already in the tree; ``blocks`` are
    the tree's blocks for the whole key after the insert; ``node`` ends the key."""

    num_existing_tokens: int
    blocks: list[int]
    node: RadixNode


class RadixTree:
    """Match, insert, lock and evict over block-aligned token keys.

    Sizes are counted in blocks: ``evictable_size`` (in unlocked nodes) plus
    ``protected_size`` (in locked nodes) is every block the tree owns.

    Args:
        block_size: tokens per block; keys are cut at multiples of it.
    """

    def __init__(self, block_size: int) -> None:
        if block_size < 1:
            raise ValueError(f"block_size={block_size} must be >= 1")
        self.block_size = block_size
        self._node_ids = itertools.count()
        self.root = RadixNode([], [], lock_ref=1, node_id=next(self._node_ids))  # never evicted
        self.evictable_size = 0
        self.protected_size = 0
        self._clock = 0
        self._evictable_leaves: set[RadixNode] = set()

    # -- lookups ----------------------------------------------------------------------

    def _first_block(self, tokens: list[int], start: int) -> tuple[int, ...]:
        return tuple(tokens[start : start + self.block_size])

    def _common_length(self, key: list[int], tokens: list[int], start: int) -> int:
        """Tokens, in whole blocks, that ``key`` shares with ``tokens[start:]``."""
        p = self.block_size
        limit = min(len(key), len(tokens) - start) // p * p
        if key[:limit] == tokens[start : start + limit]:  # the common case, at C speed
            return limit
        n = 0
        while key[n : n + p] == tokens[start + n : start + n + p]:
            n += p
        return n

    def match_prefix(self, tokens: list[int]) -> tuple[list[int], RadixNode]:
        """Blocks of the longest cached prefix of ``tokens`` (whole blocks), and the node
        where it ends (the root for no match). Splits a node the match ends inside, so
        that locking the returned node protects exactly the matched blocks."""
        self._clock += 1
        node, blocks, i = self.root, [], 0
        while len(tokens) - i >= self.block_size:
            child = node.children.get(self._first_block(tokens, i))
            if child is None:
                break
            n = self._common_length(child.key, tokens, i)
            if n < len(child.key):
                child = self._split(child, n)
            child.last_access = self._clock
            blocks.extend(child.blocks)
            node, i = child, i + n
        return blocks, node

    def insert(self, tokens: list[int], blocks: list[int]) -> InsertResult:
        """Add ``tokens`` (whose KV sits in ``blocks``, one per ``block_size`` tokens).

        The part already in the tree keeps the tree's blocks (the caller frees its own
        duplicates); the rest becomes one new leaf owning ``blocks`` from there on.

        Raises:
            ValueError: ``len(tokens) != len(blocks) * block_size``.
        """
        if len(tokens) != len(blocks) * self.block_size:
            raise ValueError(f"{len(tokens)} tokens need {len(tokens) / self.block_size:g} blocks of "
                             f"{self.block_size}, got {len(blocks)}; insert whole blocks only")
        self._clock += 1
        node, i, tree_pages = self.root, 0, []
        while i < len(tokens):
            first = self._first_block(tokens, i)
            child = node.children.get(first)
            if child is None:
                leaf = RadixNode(tokens[i:], blocks[i // self.block_size :], parent=node,
                                 last_access=self._clock, node_id=next(self._node_ids))
                node.children[first] = leaf
                self.evictable_size += len(leaf.blocks)
                self._refresh(node)
                self._refresh(leaf)
                return InsertResult(i, tree_pages + leaf.blocks, leaf)
            n = self._common_length(child.key, tokens, i)
            if n < len(child.key):
                child = self._split(child, n)
            child.last_access = self._clock
            tree_pages.extend(child.blocks)
            node, i = child, i + n
        return InsertResult(i, tree_pages, node)

    def _split(self, child: RadixNode, n: int) -> RadixNode:
        """Cut ``child``'s edge after ``n`` tokens (a block multiple); returns the new
        upper node, which inherits the lock count (sizes do not change)."""
        p = self.block_size
        parent = child.parent
        top = RadixNode(child.key[:n], child.blocks[: n // p], parent=parent, lock_ref=child.lock_ref,
                        last_access=child.last_access, node_id=next(self._node_ids))
        parent.children[self._first_block(child.key, 0)] = top
        child.key, child.blocks, child.parent = child.key[n:], child.blocks[n // p :], top
        top.children[self._first_block(child.key, 0)] = child
        return top

    # -- locking ----------------------------------------------------------------------

    def lock(self, node: RadixNode) -> None:
        """A request uses the path root -> ``node``: protect it from eviction."""
        while node is not self.root:
            if node.lock_ref == 0:
                self.evictable_size -= len(node.blocks)
                self.protected_size += len(node.blocks)
            node.lock_ref += 1
            self._refresh(node)
            node = node.parent

    def unlock(self, node: RadixNode) -> None:
        """Undo one :meth:`lock`. Raises RuntimeError if the path was not locked."""
        while node is not self.root:
            if node.lock_ref <= 0:
                raise RuntimeError("unlock without a matching lock")
            node.lock_ref -= 1
            if node.lock_ref == 0:
                self.evictable_size += len(node.blocks)
                self.protected_size -= len(node.blocks)
            self._refresh(node)
            node = node.parent

    # -- eviction ---------------------------------------------------------------------

    def _refresh(self, node: RadixNode) -> None:
        """Keep the set of evictable leaves (unlocked, childless) up to date."""
        if node is not self.root and node.lock_ref == 0 and not node.children:
            self._evictable_leaves.add(node)
        else:
            self._evictable_leaves.discard(node)

    def evict(self, num_blocks: int) -> list[int]:
        """Drop least recently used unlocked leaves (whole leaves; a parent whose last
        child goes becomes a leaf in turn) until ``num_blocks`` blocks are freed or
        nothing is evictable. Returns the freed block ids. O(leaves) per call."""
        heap = [(n.last_access, n.node_id, n) for n in self._evictable_leaves]
        heapq.heapify(heap)
        freed: list[int] = []
        while len(freed) < num_blocks and heap:
            _, _, leaf = heapq.heappop(heap)
            freed.extend(leaf.blocks)
            self.evictable_size -= len(leaf.blocks)
            self._evictable_leaves.discard(leaf)
            parent = leaf.parent
            del parent.children[self._first_block(leaf.key, 0)]
            self._refresh(parent)
            if parent in self._evictable_leaves:
                heapq.heappush(heap, (parent.last_access, parent.node_id, parent))
        return freed

    # -- inspection -------------------------------------------------------------------

    def nodes(self) -> Iterator[RadixNode]:
        """Every node but the root, parents before children, in insertion order."""
        stack = list(reversed(self.root.children.values()))
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children.values()))

    @property
    def total_size(self) -> int:
        """Blocks the tree owns."""
        return self.evictable_size + self.protected_size
