"""Overlap scheduling: step N+1 is planned and launched before step N's tokens reach
the CPU. It must never change what is generated.

Two levels:
* the real model (float32, CPU): greedy tokens with the overlapped loop equal the
  plain loop's and transformers', with every prefix cache, small chunks, preemption,
  one-token requests and stop tokens, and every page comes back;
* the real engine loop over a model-free executor whose "model" is a hash chain of
  the tokens in the KV cache (so a wrong input, a placeholder filled from the wrong
  row, or a page reused too early changes the tokens), driven by hypothesis through
  random arrivals, lengths, stop tokens and page shortages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tutorial_engine import LLM, EngineConfig, SamplingParams
from tutorial_engine.engine import LLMEngine
from tutorial_engine.model_runner import StepResult
from tutorial_engine.step_plan import StepPlan

from reference import hf_greedy

STORY_PROMPTS = ["Once upon a time", "Lily saw a big dog", "The dog was happy. They played all day. The end.",
                 "One day, Tom and his mom went to the park. They"]


def assert_all_pages_back(llm: LLM) -> None:
    engine = llm.engine
    assert not engine.requests and not engine.has_unfinished()
    assert engine.kv_cache.num_free_blocks == engine.num_kvcache_blocks  # free or evictable


@pytest.mark.parametrize("prefix_caching", ["none", "hash", "radix"])
def test_stories260k_overlap_matches_plain_loop_and_transformers(stories260k, prefix_caching):
    """Small pages, a 24-token budget (chunks) and 30 pages (preemption); mixed lengths,
    a one-token request, and BOS (id 1) as a stop token so stories stop mid-batch."""
    prompts = STORY_PROMPTS + [STORY_PROMPTS[0] + " there was"]
    params = [SamplingParams(temperature=0, max_tokens=n, stop_token_ids=[1]) for n in (40, 1, 90, 25, 60)]
    results = {}
    for overlap in (False, True):
        llm = LLM(stories260k, overlap_scheduling=overlap, prefix_caching=prefix_caching, kvcache_block_size=4,
                  num_kvcache_blocks=30, max_num_batched_tokens=24, max_num_seqs=4)
        results[overlap] = llm.generate(prompts, params, use_tqdm=False)
        if overlap:
            assert llm.get_metrics()["num_preemptions"] > 0
        assert_all_pages_back(llm)
    eos = llm.engine.eos_token_ids | {1}
    for prompt, sp, plain, overlapped in zip(prompts, params, results[False], results[True]):
        expected = hf_greedy(stories260k, llm.tokenizer(prompt).input_ids, sp.max_tokens, eos)
        assert plain["token_ids"] == overlapped["token_ids"] == expected
        assert plain["finish_reason"] == overlapped["finish_reason"]
    assert len(results[True][1]["token_ids"]) == 1


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_tiny_models_overlap_matches_transformers(tiny_checkpoints, arch):
    path = tiny_checkpoints[arch]
    llm = LLM(path, overlap_scheduling=True, kvcache_block_size=4, num_kvcache_blocks=10, max_num_batched_tokens=8)
    prompts = ["Hello world", "The cache is cut into pages", "A"]
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True), use_tqdm=False)
    for prompt, out in zip(prompts, outs):
        assert out["token_ids"] == hf_greedy(path, llm.tokenizer(prompt).input_ids, 12)
    assert llm.get_metrics()["num_preemptions"] > 0
    assert_all_pages_back(llm)


def test_stop_token_costs_one_dropped_step(stories260k):
    """The overlapped loop plans a step for a request before it learns that the
    request's last token was a stop token; that step's token is dropped."""
    params = SamplingParams(temperature=0, max_tokens=200, stop_token_ids=[1])
    plain = LLM(stories260k, overlap_scheduling=False)
    overlapped = LLM(stories260k, overlap_scheduling=True)
    prompt = STORY_PROMPTS[2]  # its continuation stops at BOS after 156 tokens
    a = plain.generate(prompt, params, use_tqdm=False)[0]
    b = overlapped.generate(prompt, params, use_tqdm=False)[0]
    assert a["token_ids"] == b["token_ids"] and a["finish_reason"] == b["finish_reason"] == "stop"
    assert b["token_ids"][-1] == 1 and 1 not in b["token_ids"][:-1]
    decode = plain.get_metrics()["num_decode_tokens"], overlapped.get_metrics()["num_decode_tokens"]
    assert decode[1] == decode[0] + 1
    length = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)  # ends by length: no extra step
    plain.generate("Lily", length, use_tqdm=False)
    overlapped.generate("Lily", length, use_tqdm=False)
    assert overlapped.get_metrics()["num_decode_tokens"] - decode[1] == plain.get_metrics()["num_decode_tokens"] - decode[0]


# -- the engine loop over a model-free executor ---------------------------------------------

VOCAB = 23


def chain(previous: int, token: int) -> int:
    return xxhash.xxh3_64_intdigest(previous.to_bytes(8, "little") + token.to_bytes(8, "little"))


def reference_tokens(prompt: list[int], params: SamplingParams) -> list[int]:
    """What the hash-chain "model" generates for one request alone."""
    state, out = 0, []
    tokens = list(prompt)
    for t in tokens:
        state = chain(state, t)
    while True:
        token = state % VOCAB
        out.append(token)
        if token in params.stop_token_ids or len(out) == params.max_tokens:
            return out
        state = chain(state, token)


class HashChainExecutor:
    """Each KV slot holds the hash chain of its token and everything before it; a
    sampled token is the chain of the sequence's last token mod ``VOCAB``. Placeholder
    inputs are filled from the previous step's sampled tokens, as on the GPU."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_kvcache_blocks = num_blocks
        self.block_size = block_size
        self.slots = np.zeros(num_blocks * block_size, dtype=np.uint64)
        self.previous = np.zeros(0, dtype=np.int64)
        self.plans: list[StepPlan] = []

    def execute(self, plan: StepPlan) -> StepResult:
        self.plans.append(plan)
        ids = plan.input_ids.copy()
        ids[plan.placeholder_index] = self.previous[plan.input_rows]
        assert (ids >= 0).all(), "a placeholder was left unfilled"
        bs, seq_of_token = self.block_size, np.repeat(np.arange(plan.num_seqs), np.diff(plan.query_start_loc))
        states = np.zeros(plan.num_tokens, dtype=np.uint64)
        for t in range(plan.num_tokens):
            pos, row = int(plan.positions[t]), seq_of_token[t]
            prev = 0 if pos == 0 else int(self.slots[plan.block_tables[row, (pos - 1) // bs] * bs + (pos - 1) % bs])
            states[t] = chain(prev, int(ids[t]))
            self.slots[plan.slot_mapping[t]] = states[t]
        self.previous = (states[plan.logits_indices] % VOCAB).astype(np.int64)
        return StepResult.start_copy(torch.from_numpy(self.previous.copy()))

    def shutdown(self) -> None:
        pass


requests = st.lists(st.tuples(st.lists(st.integers(0, 5), min_size=1, max_size=30),  # prompt
                              st.integers(1, 12),  # max_tokens
                              st.sets(st.integers(0, VOCAB - 1), max_size=2),  # stop tokens
                              st.integers(0, 6)),  # arrival step
                    min_size=1, max_size=7)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reqs=requests, overlap=st.booleans(), prefix_caching=st.sampled_from(["none", "hash", "radix"]),
       budget=st.integers(1, 40), max_num_seqs=st.integers(1, 4), block_size=st.sampled_from([1, 2, 4]),
       spare_blocks=st.integers(0, 8), chunked=st.booleans())
def test_engine_loop_invariants(tiny_checkpoints, reqs, overlap, prefix_caching, budget, max_num_seqs, block_size,
                                spare_blocks, chunked):
    longest = max(len(p) + m for p, m, _, _ in reqs)
    if not chunked:
        budget = 64  # a whole max_model_len prompt must fit one step
    num_blocks = -(-longest // block_size) + spare_blocks
    config = EngineConfig(model=str(tiny_checkpoints["qwen3"]), overlap_scheduling=overlap,
                          prefix_caching=prefix_caching, kvcache_block_size=block_size, num_kvcache_blocks=num_blocks,
                          max_num_batched_tokens=budget, max_num_seqs=max_num_seqs, enable_chunked_prefill=chunked,
                          max_model_len=64)
    executor = HashChainExecutor(num_blocks, block_size)
    engine = LLMEngine(config, executor=executor)
    arrivals = sorted(((arrive, i) for i, (_, _, _, arrive) in enumerate(reqs)))
    seqs, step = {}, 0
    while arrivals or engine.has_unfinished():
        while arrivals and arrivals[0][0] <= step:
            i = arrivals.pop(0)[1]
            prompt, max_tokens, stops, _ = reqs[i]
            params = SamplingParams(temperature=0, max_tokens=max_tokens, stop_token_ids=sorted(stops), ignore_eos=True)
            seqs[i] = engine.make_sequence(prompt, params)
            engine.add_sequence(seqs[i])
        step += 1
        assert step < 2000, "no progress"
        if engine.has_unfinished():
            engine.step()
            plan = executor.plans[-1] if executor.plans else None
            if plan is not None:
                assert plan.num_seqs <= max_num_seqs and plan.num_tokens <= budget
    assert len(seqs) == len(reqs)
    for i, seq in seqs.items():
        assert seq.output_token_ids == reference_tokens(seq.prompt_token_ids, seq.sampling_params)
        assert seq.in_flight.num_tokens == 0 or seq.finish_reason == "stop"
    assert not engine.requests
    assert engine.kv_cache.num_free_blocks == num_blocks
    alloc = engine.kv_cache.allocator
    assert all(r in (0, 1) for r in alloc.ref_counts)  # only the prefix cache may still hold a page
    if prefix_caching == "none":
        assert alloc.num_free_blocks == num_blocks
