"""ModelRunner.prepare (vectorized) against a plain per-token construction, and the
CUDA-graph decoder's static-buffer and padding logic with a stand-in for replay.

The graph logic runs on a CPU here: ``CUDAGraphDecoder`` with ``replay`` replaced by
a forward pass over the same static buffers is exactly what a captured graph
computes, so padding rows (slot -1, context 1), stale block-table columns and batch
rounding are all exercised. Real capture and replay are tested in tests/gpu.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported (see test_triton_attention.py)

from tutorial_engine import LLM, SamplingParams  # noqa: E402
from tutorial_engine.attention import TORCH_BACKEND, get_attention_backend  # noqa: E402
from tutorial_engine.config import EngineConfig  # noqa: E402
from tutorial_engine.cuda_graph import CUDAGraphDecoder, capture_batch_sizes, graphs_unavailable_reason  # noqa: E402
from tutorial_engine.scheduler import ScheduledSequence, SchedulerOutput  # noqa: E402
from tutorial_engine.sequence import Sequence  # noqa: E402
from tutorial_engine.step_plan import build_step_plan  # noqa: E402


def reference_prepare(out: SchedulerOutput, block_size: int) -> dict:
    ids, positions, slots, qsl, seq_lens, logits = [], [], [], [0], [], []
    for item in out.scheduled:
        seq, start = item.seq, item.seq.num_computed_tokens
        for p in range(start, start + item.num_new_tokens):
            ids.append(seq.token_ids[p])
            positions.append(p)
            slots.append(seq.block_table[p // block_size] * block_size + p % block_size)
        qsl.append(qsl[-1] + item.num_new_tokens)
        seq_lens.append(start + item.num_new_tokens)
        if item.will_sample:
            logits.append(qsl[-1] - 1)
    width = max(len(s.seq.block_table) for s in out.scheduled)
    tables = [s.seq.block_table + [0] * (width - len(s.seq.block_table)) for s in out.scheduled]
    return dict(ids=ids, positions=positions, slots=slots, qsl=qsl, seq_lens=seq_lens, logits=logits, tables=tables)


def test_step_plan_matches_per_token_reference(tiny_checkpoints):
    runner = LLM(tiny_checkpoints["qwen3"], kvcache_block_size=4).engine.executor.runner
    params = SamplingParams(max_tokens=4)
    out = SchedulerOutput()
    # (prompt length, computed tokens, new tokens, pages): decode, first chunk, middle chunk, whole prompt.
    cases = [(9, 9, 1, [7, 3, 11]), (13, 0, 6, [2, 5]), (20, 8, 7, [1, 0, 9, 4]), (3, 0, 3, [6])]
    for i, (length, computed, new, table) in enumerate(cases):
        seq = Sequence(i, list(range(100 + 10 * i, 100 + 10 * i + length)), params)
        if computed == length:  # a decode: one generated token not yet computed
            seq.token_ids.append(42)
        seq.num_computed_tokens, seq.block_table = computed, table
        out.scheduled.append(ScheduledSequence(seq, new))
    inputs, ref = runner.prepare(build_step_plan(out, 4)), reference_prepare(out, 4)
    meta = inputs.meta
    assert inputs.input_ids.tolist() == ref["ids"] and inputs.positions.tolist() == ref["positions"]
    assert meta.slot_mapping.tolist() == ref["slots"] and meta.block_tables.tolist() == ref["tables"]
    assert meta.query_start_loc.tolist() == ref["qsl"] == meta.query_start_loc_cpu
    assert meta.seq_lens.tolist() == ref["seq_lens"] == meta.seq_lens_cpu
    assert inputs.logits_indices.tolist() == ref["logits"] == [0, 16]  # partial chunks do not sample
    assert (meta.max_query_len, meta.max_seq_len) == (7, 15)
    assert inputs.input_ids.dtype == inputs.positions.dtype == meta.slot_mapping.dtype == torch.int64
    assert meta.block_tables.dtype == meta.seq_lens.dtype == meta.query_start_loc.dtype == torch.int32


def test_capture_batch_sizes():
    assert capture_batch_sizes(1) == [1]
    assert capture_batch_sizes(5) == [1, 2, 4, 5]
    assert capture_batch_sizes(40) == [1, 2, 4, 8, 16, 32, 40]
    sizes = capture_batch_sizes(512)
    assert sizes[-1] == 512 and len(sizes) == 4 + 32 and all(b - a <= 16 for a, b in zip(sizes, sizes[1:]))


def test_graphs_unavailable_reasons(tiny_checkpoints):
    config = EngineConfig(model=str(tiny_checkpoints["qwen3"]))
    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    graph_safe = get_attention_backend("triton", cpu)
    assert graph_safe.supports_cuda_graphs and not TORCH_BACKEND.supports_cuda_graphs
    assert graphs_unavailable_reason(config, gpu, graph_safe) is None
    assert "not a CUDA GPU" in graphs_unavailable_reason(config, cpu, graph_safe)
    assert "not graph-safe" in graphs_unavailable_reason(config, gpu, TORCH_BACKEND)
    eager = EngineConfig(model=str(tiny_checkpoints["qwen3"]), enforce_eager=True)
    assert graphs_unavailable_reason(eager, gpu, graph_safe) == "enforce_eager=True"


class ForwardReplay:
    """Stands in for a captured graph: replay runs the forward on the static buffers."""

    def __init__(self, decoder: CUDAGraphDecoder, batch_size: int) -> None:
        self.decoder, self.batch_size = decoder, batch_size

    def replay(self) -> None:
        self.decoder.outputs[self.batch_size] = self.decoder._forward(self.batch_size)
        self.decoder.replayed.append(self.batch_size)


class CPUGraphDecoder(CUDAGraphDecoder):
    def _capture_all(self) -> None:
        self.replayed = []
        self.graphs = {size: ForwardReplay(self, size) for size in self.batch_sizes}


PROMPTS = ["Hello world", "The cache is cut into pages", "A", "Requests arrive at any time", "one two"]


@pytest.mark.parametrize("max_tokens", [[9, 3, 6, 12, 2]])
def test_graph_padding_keeps_greedy_tokens(tiny_checkpoints, max_tokens):
    """Greedy tokens are identical when decode steps go through the static, padded
    buffers; the batch shrinks 5 -> 4 -> 3 -> 1 as requests finish, so steps are
    padded to 8, 4, 4 and 1 rows and stale block-table rows are left behind."""
    llm = LLM(tiny_checkpoints["qwen3"], attention_backend="triton", kvcache_block_size=4, max_num_seqs=8)
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in max_tokens]
    eager = [o["token_ids"] for o in llm.generate(PROMPTS, params, use_tqdm=False)]
    runner = llm.engine.executor.runner
    runner.graphs = CPUGraphDecoder(runner.model, 8, 16, runner.max_model_len, runner.device)
    padded = [o["token_ids"] for o in llm.generate(PROMPTS, params, use_tqdm=False)]
    assert padded == eager
    assert {8, 4, 1} <= set(runner.graphs.replayed)  # 5 rows ran padded to 8, 3 rows padded to 4
    assert runner.graphs.slot_mapping[1:].tolist().count(-1) >= 3  # padding rows never store K/V
