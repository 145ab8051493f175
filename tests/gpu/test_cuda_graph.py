"""CUDA graphs and GPU-memory sizing on a real GPU (skipped without CUDA).

Run on the device: ``PYTHONPATH=. python3 -m pytest tests/gpu -q``.

Greedy tokens must be identical with graphs and without (the graph replays the same
kernels; padding rows must not disturb real ones), in float32 on the tiny Qwen3 and
in bf16 on the Qwen3-0.6B shape; and the benchmark path (Triton attention, graphs)
must give the torch reference backend's greedy tokens in float32.
"""

from __future__ import annotations

import gc

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from tutorial_engine import LLM, SamplingParams  # noqa: E402
from tutorial_engine.bench.models import architecture_folder  # noqa: E402
from tutorial_engine.bench.workloads import make_requests  # noqa: E402

PROMPTS = ["Hello world", "The cache is cut into pages", "A", "Requests arrive at any time", "one two"]


def count_replays(llm) -> list[int]:
    """Record the batch size of every decode step that went through a graph."""
    graphs, seen = llm.engine.executor.runner.graphs, []
    original = graphs.run

    def run(input_ids, positions, meta):
        seen.append(meta.num_seqs)
        return original(input_ids, positions, meta)

    graphs.run = run
    return seen


def greedy_ids(llm, prompts, max_tokens) -> list[list[int]]:
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in max_tokens]
    return [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]


def test_float32_tiny_qwen3_graphs_match_eager(tiny_checkpoints):
    max_tokens = [20, 5, 11, 30, 3]  # the batch shrinks as requests finish: 5, 4, 3, 2, 1 rows
    options = dict(dtype="float32", kvcache_block_size=16, max_num_seqs=8, gpu_memory_utilization=0.3)
    eager = LLM(tiny_checkpoints["qwen3"], enforce_eager=True, **options)
    assert eager.engine.executor.runner.graphs is None
    expected = greedy_ids(eager, PROMPTS, max_tokens)
    del eager
    graphed = LLM(tiny_checkpoints["qwen3"], **options)
    assert graphed.engine.executor.runner.graphs is not None
    replays = count_replays(graphed)
    assert greedy_ids(graphed, PROMPTS, max_tokens) == expected
    assert {5, 3, 1} <= set(replays)  # padded (5 -> 8, 3 -> 4) and exact sizes both replayed


def test_bf16_qwen3_0_6b_graphs_match_eager(tmp_path):
    """bf16 replay is bit-identical to eager when the shapes are the same: batches of
    exactly a captured size (16, then 8), and contexts short enough that the decode
    kernel's split count (chosen from ``max_seq_len``) is the same in both. (A padded
    batch may pick other GEMM kernels, so its bf16 logits can differ in the last bits
    and random-weight greedy ties can flip; padding is checked in float32 above.)"""
    folder = architecture_folder("qwen3-0.6b", tmp_path)
    prompts = make_requests("nanovllm").subset(16).prompts
    prompts = [p[:64 + 8 * i] for i, p in enumerate(prompts)]  # 64..184 tokens
    max_tokens = [8] * 8 + [4] * 8  # 16 rows for 3 decode steps, then 8 rows
    options = dict(load_format="dummy", max_model_len=256, max_num_seqs=32, gpu_memory_utilization=0.3)
    results = {}
    for eager in (True, False):
        llm = LLM(str(folder), enforce_eager=eager, **options)
        assert llm.engine.dtype == torch.bfloat16 and (llm.engine.executor.runner.graphs is None) == eager
        replays = [] if eager else count_replays(llm)
        results[eager] = greedy_ids(llm, prompts, max_tokens)
        del llm
    assert results[False] == results[True]
    assert set(replays) == {16, 8}


def test_benchmark_path_matches_torch_backend_float32(tmp_path):
    """The headline configuration (Triton attention + graphs + chunked prefill) gives
    the torch reference backend's greedy tokens on the first requests of the workload."""
    folder = architecture_folder("qwen3-0.6b", tmp_path)
    requests = make_requests("nanovllm").subset(6)
    options = dict(load_format="dummy", dtype="float32", max_model_len=1280, max_num_seqs=8,
                   max_num_batched_tokens=1024, gpu_memory_utilization=0.4)
    fast = LLM(str(folder), **options)
    assert fast.engine.executor.runner.backend.name != "torch" and fast.engine.executor.runner.graphs is not None
    replays = count_replays(fast)
    fast_ids = greedy_ids(fast, requests.prompts, [12] * 6)
    del fast
    reference = LLM(str(folder), attention_backend="torch", enforce_eager=True, **options)
    assert greedy_ids(reference, requests.prompts, [12] * 6) == fast_ids
    assert replays  # decode steps really went through graphs


def test_kv_cache_sized_from_gpu_memory(tmp_path):
    """The profiled sizing keeps the whole engine, a worst-case step included, under
    gpu_memory_utilization of the card."""
    gc.collect()
    torch.cuda.empty_cache()
    folder = architecture_folder("qwen3-0.6b", tmp_path)
    utilization = 0.35
    llm = LLM(str(folder), load_format="dummy", max_model_len=4096, max_num_batched_tokens=4096,
              max_num_seqs=256, gpu_memory_utilization=utilization)
    engine = llm.engine
    profile = engine.executor.runner.memory_profile
    per_block = engine.executor.runner.kv_cache[:, :, 0].numel() * engine.executor.runner.kv_cache.element_size()
    assert profile.kv_cache > 0 and profile.prefill_activations > 0 and profile.graph_reserve > 0
    assert engine.num_kvcache_blocks == profile.kv_cache // per_block  # below 256 full-length sequences
    torch.cuda.reset_peak_memory_stats()
    prompts = [[(13 * i + j) % 10000 for j in range(4000)] for i in range(4)]  # full-budget prefill steps
    llm.generate(prompts, SamplingParams(max_tokens=16, ignore_eos=True, temperature=0.6), use_tqdm=False)
    free, total = torch.cuda.mem_get_info()
    peak = torch.cuda.max_memory_reserved() + profile.non_torch
    assert peak <= utilization * total + 512 * 2**20, (peak / 2**30, profile.as_gib())
    assert peak >= 0.8 * utilization * total  # and the KV cache took what was left
