"""Prefix caching through the GPU path (skipped without CUDA): the Triton/flash
kernels read a cached prefix's pages during prefill, and decode replays CUDA graphs
over shared pages; greedy tokens (float32) must not change with "hash" or "radix".

Run on the device: ``PYTHONPATH=. python3 -m pytest tests/test_prefix_caching_gpu.py -q``.
"""

from __future__ import annotations

import pytest
import torch

from test_prefix_caching import run, shared_prefix_prompts

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("enforce_eager", [True, False], ids=["eager", "cuda-graphs"])
@pytest.mark.parametrize("num_blocks", [None, 24], ids=["ample", "evicting"])
def test_gpu_same_tokens_with_every_cache(tiny_checkpoints, enforce_eager, num_blocks):
    prompts = shared_prefix_prompts(0, 500, num=8)
    waves = [prompts[:3], prompts, prompts[::-1]]
    config = dict(device="cuda", dtype="float32", attention_backend="auto", enforce_eager=enforce_eager,
                  kvcache_block_size=4, num_kvcache_blocks=num_blocks, max_num_batched_tokens=48)
    results = {m: run(tiny_checkpoints["qwen3"], m, waves, max_tokens=20, **config) for m in ("none", "hash", "radix")}
    reference = [o["token_ids"] for o in results["none"][0]]
    for mode in ("hash", "radix"):
        outs, metrics, _ = results[mode]
        assert [o["token_ids"] for o in outs] == reference, mode
        assert metrics["prefix_cache_hit_tokens"] > 0
