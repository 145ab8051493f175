"""Chapter 8's graded tasks, both ways (the reference passes; a stub is "not attempted";
known-wrong answers fail), and the references count the traffic the engine issues."""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch

from tutorial_engine import EngineConfig, SamplingParams
from tutorial_engine.book.grading import ch08
from tutorial_engine.loader import decoder_spec, load_hf_config
from tutorial_engine.model_runner import ModelRunner
from tutorial_engine.scheduler import ScheduledSequence, SchedulerOutput
from tutorial_engine.sequence import Sequence
from tutorial_engine.step_plan import build_step_plan

from grading_both_ways import assert_graded_both_ways


def _one_all_reduce(num_tokens, hidden_size, dtype_bytes):
    return num_tokens * hidden_size * dtype_bytes


def _split_by_ranks(num_tokens, hidden_size, dtype_bytes):
    return 2 * num_tokens * hidden_size * dtype_bytes // 2


def _reduce_scatter_only(message_bytes, world_size):
    return (world_size - 1) / world_size * message_bytes


def _whole_message_twice(message_bytes, world_size):
    return 2 * message_bytes if world_size > 1 else 0


def _no_embedding_all_reduce(num_layers, hidden_size, vocab_size, num_tokens, num_sampled, world_size, dtype_bytes):
    out = ch08.step_communication(num_layers, hidden_size, vocab_size, num_tokens, num_sampled, world_size,
                                  dtype_bytes)
    if world_size > 1:
        out["all_reduces"] -= 1
        out["all_reduce_bytes"] = out["all_reduces"] * num_tokens * hidden_size * dtype_bytes
        out["sent_per_gpu_bytes"] = ch08.ring_bytes_sent_per_gpu(out["all_reduce_bytes"], world_size)
    return out


def _whole_vocab_logits(num_layers, hidden_size, vocab_size, num_tokens, num_sampled, world_size, dtype_bytes):
    out = ch08.step_communication(num_layers, hidden_size, vocab_size, num_tokens, num_sampled, world_size,
                                  dtype_bytes)
    if world_size > 1:
        out["logits_to_rank0_bytes"] = num_sampled * vocab_size * dtype_bytes
    return out


WRONG = {
    "ch08.layer_bytes": [_one_all_reduce, _split_by_ranks],
    "ch08.ring": [_reduce_scatter_only, _whole_message_twice],
    "ch08.step": [_no_embedding_all_reduce, _whole_vocab_logits],
}


def test_every_task_has_known_wrong_answers():
    assert {task.name for task in ch08.TASKS} == set(WRONG)


@pytest.mark.parametrize("task", ch08.TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


@pytest.mark.parametrize("prompt_lens", [[7, 3, 12], [1]])
def test_step_reference_counts_the_engines_collectives(stories260k, prompt_lens):
    """Rank 0 of 2 (float32) runs a prefill step with its collectives replaced by
    recorders: their calls and bytes are what ``step_communication`` predicts."""
    spec = decoder_spec(load_hf_config(stories260k))
    config = EngineConfig(model=str(stories260k), tensor_parallel_size=2, num_kvcache_blocks=16,
                          kvcache_block_size=4, device="cpu")
    seen = {"all_reduce": [], "gather": [], "broadcast": []}

    def recorder(kind, result):
        def record(x, *args):
            seen[kind].append(x.numel() * x.element_size())
            return result(x)
        return record

    with mock.patch("tutorial_engine.models.layers.all_reduce", recorder("all_reduce", lambda x: x)), \
            mock.patch("tutorial_engine.models.layers.gather_to_rank0",
                       recorder("gather", lambda x: torch.cat([x, x], dim=-1))), \
            mock.patch("tutorial_engine.model_runner.broadcast_from_rank0", recorder("broadcast", lambda x: x)):
        runner = ModelRunner(config, spec, torch.device("cpu"), torch.float32, 64, tp_rank=0)
        out, block = SchedulerOutput(), 0
        for i, n in enumerate(prompt_lens):
            seq = Sequence(i, list(range(3, 3 + n)), SamplingParams(temperature=0, max_tokens=1))
            seq.block_table = list(range(block, block + math.ceil(n / 4)))
            block += len(seq.block_table)
            out.scheduled.append(ScheduledSequence(seq, n))
        runner.execute(build_step_plan(out, 4))
    expected = ch08.step_communication(spec.num_layers, spec.hidden_size, spec.vocab_size, sum(prompt_lens),
                                       len(prompt_lens), 2, 4)
    assert len(seen["all_reduce"]) == expected["all_reduces"]
    assert sum(seen["all_reduce"]) == expected["all_reduce_bytes"]
    assert sum(seen["gather"]) * (2 - 1) == expected["logits_to_rank0_bytes"]  # each other rank sends one shard
    assert sum(seen["broadcast"]) == expected["token_broadcast_bytes"]
    per_layer = ch08.layer_all_reduce_bytes(sum(prompt_lens), spec.hidden_size, 4)
    assert sum(seen["all_reduce"][1:]) == spec.num_layers * per_layer  # the first is the embedding's
