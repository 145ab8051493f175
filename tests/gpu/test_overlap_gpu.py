"""Overlap scheduling on a real GPU (skipped without CUDA): the overlapped loop, with
Triton attention and CUDA graphs, gives the plain loop's greedy tokens, float32 on
the tiny Qwen3 and bf16 on the Qwen3-0.6B shape, with and without prefix caching,
with preemption; and an LLM that is shut down gives its GPU memory back."""

from __future__ import annotations

import gc

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from tutorial_engine import LLM, SamplingParams  # noqa: E402
from tutorial_engine.bench.models import architecture_folder  # noqa: E402
from tutorial_engine.bench.workloads import make_requests  # noqa: E402


def greedy(llm, prompts, max_tokens, stop=()):
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=not stop, stop_token_ids=list(stop))
              for n in max_tokens]
    return [o["token_ids"] for o in llm.generate(prompts, params, use_tqdm=False)]


@pytest.mark.parametrize("prefix_caching", ["none", "radix"])
def test_tiny_qwen3_float32_overlap_matches_plain(tiny_checkpoints, prefix_caching):
    prompts = ["Hello world", "The cache is cut into pages", "A", "Requests arrive at any time", "one two"] * 3
    max_tokens = [9, 30, 6, 17, 2] * 3
    results = {}
    for overlap in (False, True):
        with LLM(tiny_checkpoints["qwen3"], dtype="float32", overlap_scheduling=overlap, prefix_caching=prefix_caching,
                 kvcache_block_size=16, num_kvcache_blocks=12, max_num_seqs=8) as llm:
            assert llm.engine.executor.runner.graphs is not None
            results[overlap] = greedy(llm, prompts, max_tokens)
            if overlap:
                assert llm.get_metrics()["num_preemptions"] > 0
            assert llm.engine.kv_cache.num_free_blocks == llm.engine.num_kvcache_blocks
    assert results[False] == results[True]


def test_qwen3_0_6b_bf16_overlap_matches_plain(tmp_path):
    folder = architecture_folder("qwen3-0.6b", tmp_path)
    requests = make_requests("nanovllm").subset(24)
    max_tokens = [(37 * i) % 60 + 1 for i in range(24)]
    results = {}
    for overlap in (False, True):
        with LLM(str(folder), load_format="dummy", overlap_scheduling=overlap, max_model_len=2048,
                 max_num_batched_tokens=2048, gpu_memory_utilization=0.3) as llm:
            results[overlap] = greedy(llm, requests.prompts, max_tokens)
    assert results[False] == results[True]


def test_shutdown_gives_gpu_memory_back(tmp_path):
    folder = architecture_folder("qwen3-0.6b", tmp_path)
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    for _ in range(2):  # the second engine is sized as if the first never existed
        llm = LLM(str(folder), load_format="dummy", max_model_len=2048, gpu_memory_utilization=0.5)
        blocks = llm.engine.num_kvcache_blocks
        llm.generate([[1, 2, 3]], SamplingParams(max_tokens=4), use_tqdm=False)
        llm.shutdown()
        assert torch.cuda.memory_allocated() - before < 64 * 2**20
    del llm
    assert LLM(str(folder), load_format="dummy", max_model_len=2048, gpu_memory_utilization=0.5
               ).engine.num_kvcache_blocks >= 0.95 * blocks
