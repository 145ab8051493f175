"""Tensor parallelism on two GPUs: NCCL, CUDA graphs captured per rank with the
all-reduces inside, overlap scheduling (skipped without two CUDA GPUs).

Run on a machine with two GPUs: ``PYTHONPATH=. python3 -m pytest tests/gpu/test_tensor_parallel_gpu.py -q``.

* float32: greedy tokens with ``tensor_parallel_size=2`` equal ``tensor_parallel_size=1``
  (a sum split over ranks rounds differently in the last bits, far below the margin
  between a greedy token and the next one on these prompts).
* bfloat16: the prompt's last-position logits are close (rounding differs in more bits).
"""

from __future__ import annotations

import gc

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                reason="needs two CUDA GPUs")

from tutorial_engine import LLM, SamplingParams  # noqa: E402

PROMPTS = ["Hello world", "The cache is cut into pages", "A", "Requests arrive at any time", "one two"]
GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


def generate(path, prompts, params, **options) -> tuple[list[list[int]], list[torch.Tensor], list[int]]:
    """Token ids, the logits rank 0 sampled from at each step, and the batch size of every
    decode step replayed from a CUDA graph; the engine is shut down afterwards."""
    llm = LLM(path, **options)
    runner = llm.engine.executor.runner
    logits_seen, replays = [], []
    sampler, graphs = runner.sampler, runner.graphs
    assert graphs is not None, "CUDA graphs were not captured"

    def sample(logits, seq_ids, sampling_params):
        logits_seen.append(logits.float().cpu())
        return sampler(logits, seq_ids, sampling_params)

    original_run = graphs.run

    def run(input_ids, positions, meta):
        replays.append(meta.num_seqs)
        return original_run(input_ids, positions, meta)

    runner.sampler, graphs.run = sample, run
    try:
        outs = llm.generate(prompts, params, use_tqdm=False)
    finally:
        llm.shutdown()
        del llm, runner
        gc.collect()
    return [o["token_ids"] for o in outs], logits_seen, replays


@pytest.mark.parametrize("overlap", [False, True])
def test_two_gpus_float32_same_greedy_tokens_with_graphs(tiny_checkpoints, overlap):
    path = tiny_checkpoints["qwen3"]
    options = dict(dtype="float32", attention_backend="triton", overlap_scheduling=overlap, max_num_seqs=8)
    one, _, _ = generate(path, PROMPTS, GREEDY, **options)
    two, _, replays = generate(path, PROMPTS, GREEDY, tensor_parallel_size=2, **options)
    assert two == one
    assert replays, "no decode step replayed a graph"


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_two_gpus_bfloat16_logits_close(tiny_checkpoints, arch):
    path = tiny_checkpoints[arch]
    params = SamplingParams(temperature=0, max_tokens=1)
    options = dict(dtype="bfloat16", attention_backend="triton", max_num_seqs=8)
    _, one, _ = generate(path, PROMPTS, params, **options)
    _, two, _ = generate(path, PROMPTS, params, tensor_parallel_size=2, **options)
    torch.testing.assert_close(torch.cat(two), torch.cat(one), atol=5e-2, rtol=5e-2)


def test_more_ranks_than_gpus_is_refused(tiny_checkpoints):
    n = torch.cuda.device_count() + 1
    with pytest.raises(ValueError, match=f"tensor_parallel_size={n} needs {n} GPUs"):
        LLM(tiny_checkpoints["qwen3"], tensor_parallel_size=n)
