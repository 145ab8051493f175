"""Sampling: greedy, temperature, top-k, top-p, per-request seeds."""

from __future__ import annotations

import pytest
import torch

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.sampler import Sampler, SamplingBatch, apply_top_k_top_p


def test_top_k_top_p_masks():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]])
    kept = apply_top_k_top_p(probs, top_k=torch.tensor([2, 0]), top_p=torch.tensor([1.0, 0.5]))
    assert kept[0].tolist() == pytest.approx([0.5, 0.3, 0.0, 0.0])
    assert (kept[1] > 0).sum() == 2  # 0.25 + 0.25 reaches 0.5
    only_best = apply_top_k_top_p(probs, top_k=torch.tensor([0, 0]), top_p=torch.tensor([0.01, 0.01]))
    assert (only_best > 0).sum(dim=-1).tolist() == [1, 1]


def test_sampling_frequencies_follow_temperature_scaled_softmax():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(20000, 1)
    sampler = Sampler(torch.device("cpu"), seed=0)
    params = [SamplingParams(temperature=1.0)] * logits.shape[0]
    tokens = sampler(logits, SamplingBatch.from_params(list(range(logits.shape[0])), params))
    freq = torch.bincount(tokens, minlength=3).float() / tokens.numel()
    assert freq.tolist() == pytest.approx([0.6, 0.3, 0.1], abs=0.015)
    sharp = [SamplingParams(temperature=0.25)] * logits.shape[0]
    tokens = sampler(logits, SamplingBatch.from_params(list(range(logits.shape[0])), sharp))
    expected = torch.softmax(torch.log(torch.tensor([0.6, 0.3, 0.1])) / 0.25, dim=0)
    freq = torch.bincount(tokens, minlength=3).float() / tokens.numel()
    assert freq.tolist() == pytest.approx(expected.tolist(), abs=0.015)


def test_greedy_rows_take_argmax_in_a_mixed_batch():
    logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]])
    sampler = Sampler(torch.device("cpu"), seed=0)
    out = sampler(logits, SamplingBatch.from_params([0, 1], [SamplingParams(temperature=0),
                                                            SamplingParams(temperature=1.0, top_k=1)]))
    assert out.tolist() == [1, 0]


def test_seeded_requests_do_not_depend_on_the_batch(tiny_checkpoints):
    llm = LLM(tiny_checkpoints["qwen3"])
    seeded = SamplingParams(temperature=1.0, max_tokens=12, seed=1234, ignore_eos=True)
    other = SamplingParams(temperature=1.0, max_tokens=7, ignore_eos=True)
    alone = llm.generate("The cache", seeded, use_tqdm=False)[0]["token_ids"]
    batched = llm.generate(["Other prompt", "The cache", "A third"], [other, seeded, other], use_tqdm=False)
    assert batched[1]["token_ids"] == alone
    different_seed = SamplingParams(temperature=1.0, max_tokens=12, seed=99, ignore_eos=True)
    assert llm.generate("The cache", different_seed, use_tqdm=False)[0]["token_ids"] != alone


def test_top_k_one_is_greedy(tiny_checkpoints):
    llm = LLM(tiny_checkpoints["llama"])
    greedy = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    top1 = llm.generate("Hello", SamplingParams(temperature=2.0, top_k=1, max_tokens=8, ignore_eos=True), use_tqdm=False)
    assert greedy[0]["token_ids"] == top1[0]["token_ids"]


def test_top_p_one_keeps_the_whole_tail_of_a_peaked_distribution():
    """float32 cumulative sums reach 1.0 before the tail; top_p=1 must still keep it."""
    probs = torch.softmax(torch.randn(2, 50_000) * 8, dim=-1)
    kept = apply_top_k_top_p(probs, top_k=torch.tensor([0, 0]), top_p=torch.tensor([1.0, 1.0]))
    assert torch.equal(kept > 0, probs > 0)


def test_a_seeded_row_does_not_depend_on_another_rows_top_p():
    logits = torch.randn(2, 1000) * 3
    seeded = SamplingParams(temperature=1.0, seed=7)
    alone = Sampler(torch.device("cpu"), seed=0)(logits, SamplingBatch.from_params([0, 1], [seeded, seeded]))
    mixed = Sampler(torch.device("cpu"), seed=0)(
        logits, SamplingBatch.from_params([0, 1], [seeded, SamplingParams(temperature=1.0, top_p=0.5, seed=7)]))
    assert alone[0] == mixed[0]
