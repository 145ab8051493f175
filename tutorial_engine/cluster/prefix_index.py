"""What a router believes each replica's prefix cache holds: an approximate radix tree.

A router cannot ask every replica's cache before each request (that costs a round trip
per replica on the critical path), so it keeps its own record of what it sent where:
one tree over token ids, whose nodes are whole KV blocks (the unit a replica's cache
stores and matches, chapter 4), each node tagged with the replicas it was sent to. The
record is approximate: a replica may have evicted a block the tree still lists. To stay
close, the tree evicts too, per replica, least recently used first, once the replica's
share passes ``capacity_tokens`` (the replica's KV capacity). This is the design of
SGLang's cache-aware router (one approximate tree, tenants per node, LRU eviction per
tenant); it keys on tokens where SGLang's and Ray Serve's key on text, because this
engine's router sits after the tokenizer and a token tree predicts the engine's block
hits exactly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Node:
    """One block of ``block_size`` token ids; ``replicas`` were sent the path to it."""

    key: tuple[int, ...]
    parent: _Node | None
    children: dict[tuple[int, ...], _Node] = field(default_factory=dict)
    replicas: set[str] = field(default_factory=set)


class PrefixIndex:
    """Per replica, the full blocks of the prompts routed to it.

    Args:
        block_size: tokens per KV block (the engine's ``kvcache_block_size``); a partial
            last block is never recorded, as the engine never caches one.
        capacity_tokens: per replica, the most tokens the record keeps (its KV cache's
            size); ``None``: unbounded.

    Invariant: a replica that holds a node holds its parent, so the replica's match is
    the depth of the deepest node on the path that lists it. Every touch of a node
    touches its ancestors *after* it, so in each replica's LRU order a parent is always
    more recent than its children, and the least recent node is a leaf: evicting it
    keeps the invariant.
    """

    def __init__(self, block_size: int = 16, capacity_tokens: int | None = None) -> None:
        if block_size < 1:
            raise ValueError(f"block_size={block_size} must be >= 1 (the engine's kvcache_block_size).")
        if capacity_tokens is not None and capacity_tokens < block_size:
            raise ValueError(f"capacity_tokens={capacity_tokens} holds no block of {block_size} tokens; "
                             "pass the replica's KV capacity, or None for no bound.")
        self.block_size = block_size
        self.capacity_blocks = None if capacity_tokens is None else capacity_tokens // block_size
        self.root = _Node((), None)
        self._lru: dict[str, OrderedDict[_Node, None]] = {}  # per replica: its nodes, least recent first

    def _blocks(self, token_ids: Sequence[int]) -> list[tuple[int, ...]]:
        b = self.block_size
        return [tuple(token_ids[i:i + b]) for i in range(0, len(token_ids) - b + 1, b)]

    def match(self, token_ids: Sequence[int]) -> dict[str, int]:
        """Replica -> tokens of the longest recorded prefix of ``token_ids`` (whole
        blocks); replicas with no match are left out. Changes nothing."""
        matched: dict[str, int] = {}
        node, depth = self.root, 0
        for key in self._blocks(token_ids):
            node = node.children.get(key)
            if node is None:
                break
            depth += self.block_size
            for replica in node.replicas:
                matched[replica] = depth
        return matched

    def insert(self, replica: str, token_ids: Sequence[int]) -> None:
        """Record that ``replica`` was sent ``token_ids`` (its cache will hold their
        full blocks), then evict its least recent blocks beyond ``capacity_tokens``."""
        lru = self._lru.setdefault(replica, OrderedDict())
        path, node = [], self.root
        for key in self._blocks(token_ids):
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node(key, node)
            child.replicas.add(replica)
            path.append(child)
            node = child
        for node in reversed(path):  # leaf first: parents end up more recent (the invariant)
            lru[node] = None
            lru.move_to_end(node)
        while self.capacity_blocks is not None and len(lru) > self.capacity_blocks:
            self._evict(replica, lru.popitem(last=False)[0])

    def _evict(self, replica: str, node: _Node) -> None:
        node.replicas.discard(replica)
        while node is not self.root and not node.replicas and not node.children:
            del node.parent.children[node.key]
            node = node.parent

    def cached_tokens(self, replica: str) -> int:
        """Tokens recorded for ``replica`` (its share of the tree)."""
        return len(self._lru.get(replica, ())) * self.block_size

    def remove_replica(self, replica: str) -> None:
        """Forget a replica (it died or was removed): its cache went with it."""
        for node in self._lru.pop(replica, OrderedDict()):  # least recent first: children before parents
            self._evict(replica, node)
