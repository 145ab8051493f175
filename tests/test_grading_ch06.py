"""Chapter 6's graded tasks, both ways (the reference passes; a stub is "not attempted";
known-wrong answers fail), and the references agree with the engine's CUDA-graph code."""

from __future__ import annotations

import random

import pytest
import torch

from tutorial_engine.attention import AttentionMetadata
from tutorial_engine.cuda_graph import CUDAGraphDecoder, capture_batch_sizes, padded_batch_size
from tutorial_engine.book.grading import ch06

from grading_both_ways import assert_graded_both_ways


def _powers_of_two(max_num_seqs):
    return [s for s in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if s < max_num_seqs] + [max_num_seqs]


def _without_max(max_num_seqs):
    return [s for s in (1, 2, 4, 8) if s < max_num_seqs] + list(range(16, max_num_seqs, 16))


def _largest_below(num_seqs, sizes):
    return max((s for s in sizes if s <= num_seqs), default=None)


def _max_size_always(num_seqs, sizes):
    return sizes[-1]


def _pad_with_zero_slot(slot_mapping, seq_lens, batch_size):
    pad = batch_size - len(slot_mapping)
    return slot_mapping + [0] * pad, seq_lens + [1] * pad


def _pad_with_zero_length(slot_mapping, seq_lens, batch_size):
    pad = batch_size - len(slot_mapping)
    return slot_mapping + [-1] * pad, seq_lens + [0] * pad


WRONG = {
    "ch06.sizes": [_powers_of_two, _without_max],
    "ch06.step": [_largest_below, _max_size_always],
    "ch06.pad": [_pad_with_zero_slot, _pad_with_zero_length],
}


def test_every_task_has_known_wrong_answers():
    assert {task.name for task in ch06.TASKS} == set(WRONG)


@pytest.mark.parametrize("task", ch06.TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


def test_references_are_the_engines_rules():
    for n in list(range(1, 70)) + [255, 256, 257, 512, 600]:
        assert ch06.capture_sizes(n) == capture_batch_sizes(n)
        sizes = capture_batch_sizes(n)
        for m in range(1, n + 20):
            assert ch06.graph_for_step(m, sizes) == padded_batch_size(m, sizes)


class _Model:
    """Just enough of a model for CUDAGraphDecoder on a CPU: returns its positions as hidden states."""

    def __call__(self, input_ids, positions, meta):
        return positions[:, None].float()


class _NoCapture(CUDAGraphDecoder):
    def _capture_all(self):
        self.graphs = {size: type("G", (), {"replay": lambda self: None})() for size in self.batch_sizes}
        self.outputs = {size: torch.zeros(size, 1) for size in self.batch_sizes}


def test_pad_reference_matches_the_static_buffers():
    decoder = _NoCapture(_Model(), 64, 8, 512, torch.device("cpu"))
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(1, 64)
        slots, lens = [rng.randint(0, 999) for _ in range(n)], [rng.randint(1, 100) for _ in range(n)]
        meta = AttentionMetadata(torch.tensor(slots), torch.arange(n + 1, dtype=torch.int32),
                                 torch.tensor(lens, dtype=torch.int32), torch.zeros(n, 8, dtype=torch.int32),
                                 1, max(lens), list(range(n + 1)), lens)
        decoder.run(torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64), meta)
        batch = padded_batch_size(n, decoder.batch_sizes)
        want_slots, want_lens = ch06.pad_decode_inputs(slots, lens, batch)
        assert decoder.slot_mapping[:batch].tolist() == want_slots
        assert decoder.seq_lens[:batch].tolist() == want_lens
