"""Prefix caching without a model: the real scheduler and KV-cache manager drive a
fake runner that writes, into every KV slot, the token prefix whose last token it
holds. Before each step every sequence's cached context is read back and must be
exactly its own tokens, so a cache that shares a wrong block (a collision, a block
reused too early, a stale entry) fails here, with preemption, chunking and eviction
all in play. Reference counts and free lists are checked after every step."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tutorial_engine.step_plan import slot_of
from tutorial_engine import SamplingParams
from tutorial_engine.block_manager import KVCacheManager
from tutorial_engine.metrics import Metrics
from tutorial_engine.prefix_cache import HashPrefixCache, RadixPrefixCache
from tutorial_engine.prefix_cache import hash_cache
from tutorial_engine.scheduler import Scheduler, SchedulerConfig
from tutorial_engine.sequence import Sequence, SequenceStatus


def path_pages(node) -> list[int]:
    blocks = []
    while node.parent is not None:
        blocks[:0] = node.blocks
        node = node.parent
    return blocks


def num_cached_pages(kv: KVCacheManager, running: list[Sequence]) -> int:
    cache = kv.prefix_cache
    if isinstance(cache, HashPrefixCache):
        assert len(cache.table) == len(cache.by_block)
        assert all(kv.allocator.ref_counts[b] == 1 for b in cache.evictable)
        return len(cache.by_block)
    if isinstance(cache, RadixPrefixCache):
        for node in cache.tree.nodes():
            if node.lock_ref == 0:  # unlocked: only the tree holds its blocks
                assert all(kv.allocator.ref_counts[p] == 1 for p in node.blocks)
        for seq in running:  # a running sequence uses the tree's blocks for its locked path
            path = cache.paths[seq.seq_id]
            assert seq.block_table[: path.num_tokens // kv.block_size] == path_pages(path.node)
        return cache.tree.total_size
    return 0


def check_allocator(kv: KVCacheManager, running: list[Sequence]) -> None:
    alloc = kv.allocator
    free = list(alloc.free_block_ids)
    assert len(free) == len(set(free)) and all(alloc.ref_counts[b] == 0 for b in free)
    assert len(free) + sum(r > 0 for r in alloc.ref_counts) == alloc.num_blocks
    assert min(alloc.ref_counts) >= 0
    assert sum(alloc.ref_counts) == sum(len(s.block_table) for s in running) + num_cached_pages(kv, running)


def simulate(tmp_path, mode: str, waves: list[list[list[int]]], block_size: int, num_blocks: int,
             budget: int, chunked: bool, max_tokens: int):
    """Run ``waves`` of prompts (each wave is added when the previous one finished).
    Returns (generated tokens per prompt, metrics, cached tokens per prompt)."""
    config = SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=budget, max_model_len=10_000,
                             enable_chunked_prefill=chunked)
    kv = KVCacheManager(num_blocks, block_size, mode)
    metrics = Metrics()
    scheduler = Scheduler(config, kv, set())
    content: dict[int, tuple[int, ...]] = {}  # slot -> the token prefix whose K/V it holds
    seqs, seq_id = [], 0
    for wave in waves:
        for prompt in wave:
            seq = Sequence(seq_id, prompt, SamplingParams(max_tokens=max_tokens, ignore_eos=True))
            seq_id += 1
            seqs.append(seq)
            scheduler.add(seq)
        while scheduler.has_unfinished():
            out = scheduler.schedule()
            metrics.record_step(out.stats)
            assert not out.is_empty
            for item in out.scheduled:
                seq, start = item.seq, item.start
                assert item.num_new_tokens >= 1  # even a full cache hit computes the last token
                for p in range(start):  # what attention will read
                    assert content[slot_of(seq.block_table[p // kv.block_size], p, kv.block_size)] == tuple(seq.token_ids[: p + 1]), "wrong KV served"
                for p in range(start, start + item.num_new_tokens):
                    content[slot_of(seq.block_table[p // kv.block_size], p, kv.block_size)] = tuple(seq.token_ids[: p + 1])
            sampled = [sum(s.seq.token_ids) * 7 % 5 for s in out.scheduled if s.will_sample]
            scheduler.update_from_output(out, sampled)
            check_allocator(kv, scheduler.running)
    assert all(s.status is SequenceStatus.FINISHED for s in seqs)
    assert kv.num_free_blocks == num_blocks  # everything left is free or evictable
    return [s.output_token_ids for s in seqs], metrics, [s.num_cached_tokens for s in seqs]


BASE = [1, 2, 3, 1, 2, 3, 3, 2, 1, 1, 2, 2, 3, 3, 1, 2, 1, 3, 2, 1]
PROMPTS = st.builds(lambda cut, tail: BASE[:cut] + tail, st.integers(0, 20), st.lists(st.integers(1, 4), max_size=6))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(["none", "hash", "radix"]),
       waves=st.lists(st.lists(PROMPTS.filter(bool), min_size=1, max_size=4), min_size=1, max_size=3),
       block_size=st.integers(1, 4), spare_blocks=st.integers(0, 12), budget=st.integers(4, 40),
       chunked=st.booleans(), max_tokens=st.integers(1, 6), break_hash=st.booleans())
def test_random_workloads_never_serve_wrong_kv(tmp_path, monkeypatch, mode, waves, block_size, spare_blocks,
                                               budget, chunked, max_tokens, break_hash):
    if break_hash:  # every block collides: only the token and parent checks stand between us and wrong KV
        monkeypatch.setattr(hash_cache, "block_hash", lambda parent, tokens: 42)
    longest = max(len(p) for w in waves for p in w) + max_tokens
    num_blocks = -(-longest // block_size) + spare_blocks
    if not chunked:
        budget = max(budget, longest)
    outputs, metrics, cached = simulate(tmp_path, mode, waves, block_size, num_blocks, budget, chunked, max_tokens)
    reference, _, _ = simulate(tmp_path, "none", waves, block_size, num_blocks, budget, chunked, max_tokens)
    assert outputs == reference
    assert metrics.prefix_cache_hit_tokens <= metrics.prefix_cache_queried_tokens
    assert all(c % block_size == 0 for c in cached)


def test_preempted_sequence_rematches_on_readmission(tmp_path):
    """A tight cache forces preemptions; a readmitted victim looks its tokens up again
    and finds the shared prefix its running peers still hold."""
    rng = random.Random(0)
    shared = [rng.randrange(1, 50) for _ in range(8)]
    prompts = [shared + [rng.randrange(1, 50) for _ in range(4)] for _ in range(4)]
    for mode in ("hash", "radix"):
        _, metrics, cached = simulate(tmp_path, mode, [prompts], block_size=2, num_blocks=20, budget=64,
                                      chunked=True, max_tokens=8)
        assert metrics.num_preemptions > 0
        first_admissions = sum(len(p) for p in prompts)
        assert metrics.prefix_cache_queried_tokens > first_admissions  # readmissions query again
        assert metrics.prefix_cache_hit_tokens > sum(cached)  # ... and hit
