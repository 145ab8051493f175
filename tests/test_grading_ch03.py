"""Chapter 3's graded tasks, both ways (the reference passes; a stub is "not attempted";
known-wrong answers fail), and the references agree with the engine: slots with the
KV-cache manager, merged splits with unsplit attention."""

from __future__ import annotations

import random

import pytest
import torch

from tutorial_engine.step_plan import slot_of
from tutorial_engine import SamplingParams
from tutorial_engine.block_manager import KVCacheManager
from tutorial_engine.book.grading import ch03
from tutorial_engine.sequence import Sequence

from grading_both_ways import assert_graded_both_ways


def _contiguous_slots(block_table, start, end, block_size):
    """Ignores the table: as if the request's cache were one contiguous tensor."""
    return list(range(start, end))


def _block_id_plus_row(block_table, start, end, block_size):
    """Forgets that a block spans block_size slots."""
    return [block_table[p // block_size] + p % block_size for p in range(start, end)]


def _from_zero(block_table, start, end, block_size):
    """Maps positions 0 .. end - start - 1 instead of start .. end - 1."""
    return ch03.slot_mapping(block_table, 0, end - start, block_size)


def _plain_average(outputs, lse):
    return outputs.mean(0)


def _no_max_subtraction(outputs, lse):
    """Right formula, but exp overflows when scores are large."""
    weights = torch.exp(lse)
    return (weights[:, None] * outputs).sum(0) / weights.sum()


def _unnormalised(outputs, lse):
    weights = torch.exp(lse - lse.max())
    return (weights[:, None] * outputs).sum(0)


WRONG = {
    "ch03.slots": [_contiguous_slots, _block_id_plus_row, _from_zero],
    "ch03.merge": [_plain_average, _no_max_subtraction, _unnormalised],
}


def test_every_task_has_known_wrong_answers():
    assert {task.name for task in ch03.TASKS} == set(WRONG)


@pytest.mark.parametrize("task", ch03.TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


def test_slots_match_the_kv_cache_manager():
    """Requests growing a token at a time, interleaved, get scattered block tables."""
    rng = random.Random(3)
    for block_size in (1, 4, 16):
        manager = KVCacheManager(512, block_size)
        seqs = [Sequence(i, [1] * rng.randint(1, 60), SamplingParams()) for i in range(3)]
        for _ in range(max(s.num_prompt_tokens for s in seqs)):
            for seq in seqs:
                if seq.num_computed_tokens < seq.num_prompt_tokens:
                    assert manager.allocate_slots(seq, 1)
                    seq.num_computed_tokens += 1
        for seq in seqs:
            start = rng.randint(0, seq.num_prompt_tokens - 1)
            expected = [slot_of(seq.block_table[p // manager.block_size], p, manager.block_size) for p in range(start, seq.num_prompt_tokens)]
            assert ch03.slot_mapping(seq.block_table, start, seq.num_prompt_tokens, block_size) == expected


def test_merged_splits_equal_unsplit_attention():
    gen = torch.Generator().manual_seed(0)
    for cuts in ([], [3], [0, 0, 7], [5, 5, 20, 20]):
        q = torch.randn(8, generator=gen, dtype=torch.float64) * 20
        k, v = torch.randn(20, 8, generator=gen, dtype=torch.float64), torch.randn(20, 8, generator=gen, dtype=torch.float64)
        outputs, lse = ch03.split_attention(q, k, v, cuts)
        torch.testing.assert_close(ch03.merge_splits(outputs, lse), torch.softmax(k @ q, 0) @ v)
