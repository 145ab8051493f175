"""The radix tree on its own (SGLang's RadixAttention data structure, at block
granularity): hand-built splits, and random insert/match/lock/unlock/evict programs
checked against a brute-force model of which block-aligned prefixes are cached."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tutorial_engine.prefix_cache.radix_tree import RadixNode, RadixTree


def check_consistent(tree: RadixTree, locks: list[RadixNode]) -> None:
    """Structural invariants: keys are whole blocks, children keyed by their first block,
    each block owned by one node, lock counts equal the held locks through each node,
    size counters add up, and the evictable-leaf set is exactly the unlocked leaves."""
    p = tree.block_size
    blocks, expected_locks = [], {}
    for held in locks:
        node = held
        while node is not tree.root:
            expected_locks[node] = expected_locks.get(node, 0) + 1
            node = node.parent
    evictable = protected = 0
    for node in tree.nodes():
        assert node.key and len(node.key) == len(node.blocks) * p
        assert node.parent.children[tuple(node.key[:p])] is node
        assert node.lock_ref == expected_locks.get(node, 0) >= 0
        if node.lock_ref:
            protected += len(node.blocks)
        else:
            evictable += len(node.blocks)
        blocks.extend(node.blocks)
    assert len(blocks) == len(set(blocks)), "a block is owned by two nodes"
    assert (tree.evictable_size, tree.protected_size) == (evictable, protected)
    assert tree.total_size == len(blocks)
    leaves = {n for n in tree.nodes() if not n.children and n.lock_ref == 0}
    assert tree._evictable_leaves == leaves


def path_tokens(node: RadixNode) -> list[int]:
    parts = []
    while node.parent is not None:
        parts.append(node.key)
        node = node.parent
    return [t for part in reversed(parts) for t in part]


def test_split_on_partial_match_and_page_granularity():
    tree = RadixTree(block_size=2)
    tree.insert([1, 2, 3, 4, 5, 6], [10, 11, 12])
    result = tree.insert([1, 2, 3, 4, 7, 8], [20, 21, 22])
    assert result.num_existing_tokens == 4
    assert result.blocks == [10, 11, 22]  # the shared blocks are the tree's, the new one ours
    top = tree.root.children[(1, 2)]
    assert top.key == [1, 2, 3, 4] and top.blocks == [10, 11]
    assert [c.key for c in top.children.values()] == [[5, 6], [7, 8]]
    # A match ending inside a block stops at the block boundary; one ending inside an
    # edge splits it, so that locking the returned node protects exactly the match.
    assert tree.match_prefix([1, 2, 3, 9])[0] == [10]
    assert tree.match_prefix([1, 2, 3])[0] == [10]
    blocks, node = tree.match_prefix([1, 2, 5, 6])
    assert blocks == [10] and node.key == [1, 2] and path_tokens(node) == [1, 2]
    check_consistent(tree, [])


def test_lock_protects_path_and_eviction_goes_leaf_first_lru():
    tree = RadixTree(block_size=1)
    tree.insert([1, 2, 3], [1, 2, 3])
    tree.insert([1, 2, 4], [4, 5, 6])  # blocks 4, 5 are duplicates the caller frees
    tree.insert([7, 8], [7, 8])
    _, node = tree.match_prefix([1, 2, 4])  # touches (1, 2) and (4): leaf (3) is the oldest
    tree.lock(node)
    check_consistent(tree, [node])
    assert (tree.evictable_size, tree.protected_size) == (3, 3)
    assert tree.evict(1) == [3]  # least recently used leaf first
    assert tree.evict(10) == [7, 8]  # a whole leaf; the locked path (1, 2, 4) stays
    tree.unlock(node)
    check_consistent(tree, [])
    assert sorted(tree.evict(10)) == [1, 2, 6]
    assert tree.total_size == 0 and not tree.root.children
    with pytest.raises(RuntimeError):
        tree.unlock(node)


def test_insert_rejects_partial_pages():
    with pytest.raises(ValueError, match="whole blocks"):
        RadixTree(block_size=4).insert([1, 2, 3], [0])


# Keys drawn as a cut of one of a few long sequences plus a short random tail, so
# that random keys share long prefixes and diverge mid-edge (what exercises splits).
BASES = ([0] * 12, [0, 1, 2] * 4, [0, 1, 1, 0] * 3)
TOKENS = st.builds(lambda base, cut, tail: base[:cut] + tail, st.sampled_from(BASES), st.integers(0, 12),
                   st.lists(st.integers(0, 2), max_size=3))
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), TOKENS),
        st.tuples(st.just("match_lock"), TOKENS),
        st.tuples(st.just("unlock"), st.integers(0, 10)),
        st.tuples(st.just("evict"), st.integers(1, 6)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(block_size=st.sampled_from([1, 2, 3]), ops=OPS)
def test_random_programs_keep_tree_consistent_and_match_brute_force(block_size, ops):
    """Brute-force model: ``cached`` maps every block-aligned prefix the tree holds to
    its block. A match must return the blocks of the longest cached prefix; an insert
    caches every prefix of the key; eviction removes only unlocked prefixes, never a
    prefix without its extensions, and frees exactly their blocks."""
    tree = RadixTree(block_size)
    cached: dict[tuple[int, ...], int] = {}
    locks: list[RadixNode] = []
    page_ids = itertools.count()
    for op, arg in ops:
        if op == "insert":
            tokens = arg[: len(arg) // block_size * block_size]
            blocks = [next(page_ids) for _ in range(len(tokens) // block_size)]
            result = tree.insert(tokens, blocks)
            k = result.num_existing_tokens // block_size
            assert all(tuple(tokens[: (j + 1) * block_size]) in cached for j in range(k))
            for j in range(len(blocks)):
                cached.setdefault(tuple(tokens[: (j + 1) * block_size]), blocks[j])
            assert result.blocks == [cached[tuple(tokens[: (j + 1) * block_size])] for j in range(len(blocks))]
        elif op == "match_lock":
            blocks, node = tree.match_prefix(arg)
            n = 0
            while n + block_size <= len(arg) and tuple(arg[: n + block_size]) in cached:
                n += block_size
            assert blocks == [cached[tuple(arg[: j + block_size])] for j in range(0, n, block_size)]
            assert path_tokens(node) == arg[:n]
            tree.lock(node)
            locks.append(node)
        elif op == "unlock" and locks:
            tree.unlock(locks.pop(arg % len(locks)))
        elif op == "evict":
            before = tree.evictable_size
            protected = {tuple(path_tokens(n)[:j]) for n in locks for j in range(0, len(path_tokens(n)) + 1)}
            freed = tree.evict(arg)
            assert len(freed) >= min(arg, before)
            gone = {prefix for prefix, block in cached.items() if block in set(freed)}
            assert len(gone) == len(freed) and not gone & protected
            for prefix in gone:
                del cached[prefix]
            assert all(prefix[:-block_size] in cached or len(prefix) == block_size for prefix in cached)
        check_consistent(tree, locks)
        assert sorted(p for n in tree.nodes() for p in n.blocks) == sorted(cached.values())


@settings(max_examples=200, deadline=None)
@given(block_size=st.sampled_from([1, 2, 4]), inserted=st.lists(TOKENS, max_size=8), query=TOKENS)
def test_match_is_longest_common_prefix_with_an_inserted_sequence(block_size, inserted, query):
    """Without eviction, a match covers the longest common prefix of the query with
    any inserted key, rounded down to whole blocks."""
    tree = RadixTree(block_size)
    page_ids = itertools.count()
    for tokens in inserted:
        tokens = tokens[: len(tokens) // block_size * block_size]
        tree.insert(tokens, [next(page_ids) for _ in range(len(tokens) // block_size)])

    def lcp(a, b):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    best = max([lcp(t[: len(t) // block_size * block_size], query) for t in inserted], default=0)
    blocks, _ = tree.match_prefix(query)
    assert len(blocks) == best // block_size
