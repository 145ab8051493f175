"""The router's record of the replicas' caches and the routing policies (chapter 11)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tutorial_engine.cluster.prefix_index import PrefixIndex
from tutorial_engine.cluster.routing import OraclePolicy, PowerOfTwoPolicy, PrefixAffinityPolicy

prompts = st.lists(st.integers(0, 3), min_size=0, max_size=24)


def common_blocks(a, b, block_size):
    """Tokens of the longest common prefix of a and b, in whole blocks."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n // block_size * block_size


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), prompts), max_size=12), prompts)
def test_match_is_the_longest_recorded_prefix_in_whole_blocks(sent, query):
    index = PrefixIndex(block_size=2)
    for replica, tokens in sent:
        index.insert(replica, tokens)
    expected = {}
    for replica, tokens in sent:
        n = min(common_blocks(tokens, query, 2), len(tokens) // 2 * 2)
        if n:
            expected[replica] = max(expected.get(replica, 0), n)
    assert index.match(query) == expected


def assert_prefix_closed(index):
    """A replica listed on a block is listed on every block before it (the engine's cache
    can only hold a block whose whole prefix it holds)."""
    stack = list(index.root.children.values())
    while stack:
        node = stack.pop()
        if node.parent is not index.root:
            assert node.replicas <= node.parent.replicas
        stack.extend(node.children.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), prompts), max_size=16))
def test_eviction_keeps_each_replica_within_capacity_and_drops_the_least_recent(sent):
    index = PrefixIndex(block_size=2, capacity_tokens=6)
    for replica, tokens in sent:
        index.insert(replica, tokens)
        assert index.cached_tokens(replica) <= 6
        assert_prefix_closed(index)
        # the prompt just sent is always fully recorded when it fits
        if len(tokens) // 2 * 2 <= 6 and len(tokens) >= 2:
            assert index.match(tokens).get(replica) == len(tokens) // 2 * 2


def test_removed_replica_leaves_no_trace():
    index = PrefixIndex(block_size=2)
    index.insert("a", [1, 2, 3, 4])
    index.insert("b", [1, 2, 5, 6])
    index.remove_replica("a")
    assert index.match([1, 2, 3, 4]) == {"b": 2}
    assert index.cached_tokens("a") == 0
    assert list(index.root.children.values())[0].children.keys() == {(5, 6)}


def test_bad_index_arguments_name_the_fix():
    with pytest.raises(ValueError, match="block_size=0"):
        PrefixIndex(block_size=0)
    with pytest.raises(ValueError, match="capacity_tokens=3"):
        PrefixIndex(block_size=4, capacity_tokens=3)


def test_affinity_follows_the_cache_until_the_load_drifts():
    policy = PrefixAffinityPolicy(block_size=2, balance_abs_threshold=2, balance_rel_threshold=1.5)
    system = [7, 7, 7, 7, 7, 7]
    first = policy.choose(system + [1], {"a": 0, "b": 0})
    other = "b" if first == "a" else "a"
    assert policy.choose(system + [2], {first: 2, other: 0}) == first  # balanced enough: the cache wins
    assert policy.choose(system + [3], {first: 3, other: 0}) == other  # 3 - 0 > 2 and 3 > 1.5 * 0: load wins
    policy.index.insert(first, [5, 5, 5, 5])  # now `first` records more than `other`
    assert policy.choose([9, 9, 9, 9], {first: 1, other: 1}) == other  # matches nothing: the emptier cache


def test_power_of_two_sends_to_the_less_loaded_of_two():
    policy = PowerOfTwoPolicy(seed=1)
    assert all(policy.choose([1], {"a": 5, "b": 1}) == "b" for _ in range(20))


def test_oracle_splits_traffic_evenly_and_keeps_tenants_in_place():
    weights = {"t0": 0.4, "t1": 0.3, "t2": 0.2, "t3": 0.1}
    policy = OraclePolicy.even_split(weights, ["a", "b"])
    traffic, prefixes = {"a": 0.0, "b": 0.0}, {"a": 0, "b": 0}
    for tenant, weight in weights.items():
        traffic[policy.assignment[tenant]] += weight
        prefixes[policy.assignment[tenant]] += 1
    assert traffic == pytest.approx({"a": 0.5, "b": 0.5}) and prefixes == {"a": 2, "b": 2}
    assert policy.choose([1], {"a": 9, "b": 0}, tenant="t0") == policy.assignment["t0"]
    assert policy.choose([1], {"a": 9, "b": 0}, tenant="unknown") == "b"
