"""Property tests of the page allocator: nothing leaked, nothing freed twice."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.block_allocator import BlockAllocator
from tutorial_engine.block_manager import KVCacheManager
from tutorial_engine.sampling_params import SamplingParams as SP
from tutorial_engine.sequence import Sequence


def assert_consistent(allocator: BlockAllocator) -> None:
    free = list(allocator.free_block_ids)
    assert len(free) == len(set(free)), "a block is in the free queue twice"
    for block_id, count in enumerate(allocator.ref_counts):
        assert count >= 0, f"block {block_id} was freed more often than taken (ref count {count})"
        assert (count == 0) == (block_id in set(free)), f"block {block_id}: ref count {count} vs free queue"


ops = st.lists(
    st.tuples(st.sampled_from(["grow", "share", "free"]), st.integers(0, 5), st.integers(1, 40)), max_size=60
)


@settings(max_examples=200, deadline=None)
@given(num_blocks=st.integers(1, 24), block_size=st.sampled_from([1, 2, 4, 16]), script=ops)
def test_random_grow_share_free_keeps_allocator_consistent(num_blocks, block_size, script):
    manager = KVCacheManager(num_blocks, block_size)
    seqs = [Sequence(i, [1], SP()) for i in range(6)]
    for op, i, n in script:
        seq = seqs[i]
        if op == "grow":
            before = list(seq.block_table)
            free_before = manager.num_free_blocks
            if manager.allocate_slots(seq, n):
                seq.num_computed_tokens += n
                assert len(seq.block_table) * block_size >= seq.num_computed_tokens
            else:  # a refused allocation changes nothing
                assert seq.block_table == before and manager.num_free_blocks == free_before
        elif op == "share" and seq.block_table:  # another sequence takes a reference (prefix sharing)
            other = seqs[(i + 1) % 6]
            if not other.block_table:
                for block_id in seq.block_table:
                    manager.allocator.incref(block_id)
                other.block_table = list(seq.block_table)
                other.num_computed_tokens = len(seq.block_table) * block_size
        elif op == "free":
            manager.free(seq)
            seq.num_computed_tokens = 0
        assert_consistent(manager.allocator)
        held = sum(len(s.block_table) for s in seqs)
        assert sum(manager.allocator.ref_counts) == held
    for seq in seqs:
        manager.free(seq)
    assert manager.num_free_blocks == num_blocks and not any(manager.allocator.ref_counts)


def test_double_free_and_oversubscription_are_caught():
    allocator = BlockAllocator(2)
    block = allocator.allocate()
    assert allocator.decref(block)
    with pytest.raises(RuntimeError, match="freed twice"):
        allocator.decref(block)
    with pytest.raises(RuntimeError, match="is free"):
        allocator.incref(block)
    allocator.allocate(), allocator.allocate()
    with pytest.raises(RuntimeError, match="out of KV-cache blocks"):
        allocator.allocate()


@settings(max_examples=10, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    max_tokens=st.integers(1, 12),
    num_blocks=st.integers(14, 40),
    budget=st.integers(8, 64),
)
def test_every_request_returns_its_pages(tiny_llm_path, lengths, max_tokens, num_blocks, budget):
    llm = LLM(tiny_llm_path, kvcache_block_size=4, num_kvcache_blocks=num_blocks, max_num_batched_tokens=budget)
    prompts = [[1 + (i * 7 + j) % 300 for j in range(n)] for i, n in enumerate(lengths)]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True), use_tqdm=False)
    assert all(len(o["token_ids"]) == max_tokens for o in outs)
    allocator = llm.engine.kv_cache.allocator
    assert_consistent(allocator)
    assert allocator.num_free_blocks == num_blocks and not any(allocator.ref_counts)


@pytest.fixture(scope="module")
def tiny_llm_path(tiny_checkpoints):
    return tiny_checkpoints["qwen3"]
