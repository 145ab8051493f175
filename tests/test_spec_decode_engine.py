"""Speculative decoding inside the engine (chapter 10).

Two levels, as for overlap scheduling:
* the real models (float32, CPU): greedy tokens with prompt-lookup speculation equal
  the tokens without it and transformers', with every prefix cache, chunked prefill on
  and off, overlap on and off and a KV cache small enough to preempt; seeded sampling
  with speculation is reproducible;
* the real engine loop over a model-free executor whose KV slots hold the exact token
  prefix they were computed from, with a proposer that is right for a random number of
  tokens and then wrong (random acceptance patterns), driven by hypothesis with
  preemptions and aborts: before every step no sequence reads a slot that holds
  anything but its own tokens (so nothing rejected is ever served, from the prefix
  cache or otherwise), no block is freed twice (the allocator raises), and every block
  comes back.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tutorial_engine import LLM, EngineConfig, SamplingParams
from tutorial_engine.book import TRAINED_MODEL
from tutorial_engine.book.train_tiny import DRAFT_OUT
from tutorial_engine.engine import LLMEngine
from tutorial_engine.model_runner import StepResult
from tutorial_engine.step_plan import StepPlan, slot_of

from reference import hf_greedy

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 1, "prompt_lookup_max": 3}
# Prompts whose greedy continuations repeat text of the prompt or of themselves, so proposals get accepted.
REPEATING = ["the cat sat on the mat. the cat sat on the", "Hello world Hello world Hello", "A B A B A B A",
             "The cache is cut into pages"]
STORY_PROMPTS = ["Once upon a time", "Lily saw a big dog", "The dog was happy. They played all day. The end.",
                 "One day, Tom and his mom went to the park. They"]


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, **kw)


def assert_all_blocks_back(llm: LLM) -> None:
    engine = llm.engine
    assert not engine.requests and not engine.has_unfinished()
    assert engine.kv_cache.num_free_blocks == engine.num_kvcache_blocks
    assert all(r in (0, 1) for r in engine.kv_cache.allocator.ref_counts)  # only the prefix cache holds pages


# -- configuration ------------------------------------------------------------------------


def test_speculative_config_is_checked_before_any_work(tiny_checkpoints, tmp_path, monkeypatch):
    import tutorial_engine.engine as engine

    monkeypatch.setattr(engine, "make_executor", lambda *a, **k: pytest.fail("weights loaded before the check"))
    path = tiny_checkpoints["qwen3"]
    with pytest.raises(ValueError, match="num_speculative_tokens=0 must be >= 1"):
        LLM(path, speculative_config={"method": "ngram", "num_speculative_tokens": 0})
    with pytest.raises(ValueError, match="method='medusa' is not built"):
        LLM(path, speculative_config={"method": "medusa", "num_speculative_tokens": 2})
    with pytest.raises(ValueError, match="unknown key"):
        LLM(path, speculative_config={"method": "ngram", "num_speculative_tokens": 2, "k": 3})
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        LLM(path, speculative_config={"model": str(tmp_path / "missing"), "num_speculative_tokens": 2})
    with pytest.raises(ValueError, match="not valid JSON"):
        LLM(path, speculative_config="{method: ngram}")
    with pytest.raises(ValueError, match="vocab_size=.*must share the target's tokenizer"):
        LLM(path, speculative_config={"model": str(DRAFT_OUT), "num_speculative_tokens": 2})
    with pytest.raises(ValueError, match="device='sim'"):
        LLM(path, device="sim", speculative_config=NGRAM)


def test_json_form_is_parsed(tiny_checkpoints):
    config = EngineConfig(model=str(tiny_checkpoints["qwen3"]),
                          speculative_config='{"method": "ngram", "num_speculative_tokens": 3}')
    assert config.speculative_config.num_speculative_tokens == 3
    assert config.speculative_config.prompt_lookup_max == 4


# -- greedy outputs never change ------------------------------------------------------------


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
@pytest.mark.parametrize("prefix_caching", ["none", "hash", "radix"])
def test_tiny_models_ngram_matches_transformers(tiny_checkpoints, arch, prefix_caching):
    path = tiny_checkpoints[arch]
    llm = LLM(path, kvcache_block_size=4, prefix_caching=prefix_caching, speculative_config=NGRAM)
    outs = llm.generate(REPEATING, greedy(24, ignore_eos=True), use_tqdm=False)
    for prompt, out in zip(REPEATING, outs):
        assert out["token_ids"] == hf_greedy(path, llm.tokenizer(prompt).input_ids, 24)
    metrics = llm.get_metrics()
    assert metrics["spec_decode_num_accepted_tokens"] > 0  # speculation ran and paid somewhere
    assert metrics["spec_decode_num_accepted_tokens"] < metrics["spec_decode_num_draft_tokens"]  # and was rejected
    assert sum(o["num_accepted_tokens"] for o in outs) == metrics["spec_decode_num_accepted_tokens"]
    assert sum(o["num_draft_tokens"] for o in outs) == metrics["spec_decode_num_draft_tokens"]
    assert_all_blocks_back(llm)


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("prefix_caching", ["none", "hash", "radix"])
def test_stories260k_ngram_matches_plain_engine_and_transformers(stories260k, overlap, chunked, prefix_caching):
    """Small pages, few of them (preemption), a small budget with chunking (mixed
    verify, decode and prompt-chunk rows), stop tokens mid-batch, a one-token request."""
    prompts = STORY_PROMPTS + [STORY_PROMPTS[0] + " there was"]
    params = [greedy(n, stop_token_ids=[1]) for n in (40, 1, 90, 25, 60)]
    budget = 24 if chunked else 512
    llm = LLM(stories260k, overlap_scheduling=overlap, prefix_caching=prefix_caching, kvcache_block_size=4,
              num_kvcache_blocks=30, max_num_batched_tokens=budget, max_num_seqs=4, enable_chunked_prefill=chunked,
              max_model_len=512, speculative_config=NGRAM)
    outs = llm.generate(prompts, params, use_tqdm=False)
    eos = llm.engine.eos_token_ids | {1}
    for prompt, sp, out in zip(prompts, params, outs):
        expected = hf_greedy(stories260k, llm.tokenizer(prompt).input_ids, sp.max_tokens, eos)
        assert out["token_ids"] == expected
        assert out["finish_reason"] == ("stop" if expected[-1] in eos else "length")
    metrics = llm.get_metrics()
    assert metrics["num_preemptions"] > 0
    assert metrics["spec_decode_num_accepted_tokens"] > 0
    assert_all_blocks_back(llm)


# A passage of the book model's training text, then its opening again: the model repeats it.
PASSAGE = ("Exceptions are a means of breaking out of the normal flow of control of a code block in order to handle "
           "errors or other exceptional conditions. An exception is *raised* at the point where the error is detected;")


def test_the_books_model_repeats_a_passage_in_fewer_target_passes():
    prompts = [PASSAGE + "\n\nExceptions are a means of"]
    plain_llm = LLM(TRAINED_MODEL)
    plain = plain_llm.generate(prompts, greedy(48), use_tqdm=False)
    llm = LLM(TRAINED_MODEL, speculative_config={"method": "ngram", "num_speculative_tokens": 8})
    spec = llm.generate(prompts, greedy(48), use_tqdm=False)
    assert [o["token_ids"] for o in spec] == [o["token_ids"] for o in plain]
    assert spec[0]["num_accepted_tokens"] >= 10
    assert llm.get_metrics()["num_steps"] <= plain_llm.get_metrics()["num_steps"] - 10


def test_max_tokens_and_max_model_len_cap_the_proposals(tiny_checkpoints):
    """A verify row never emits past ``max_tokens`` or ``max_model_len``: the proposals
    are capped, so the outputs have the plain engine's lengths."""
    path = tiny_checkpoints["qwen3"]
    for config in ({"max_model_len": 26}, {}):
        plain = LLM(path, **config).generate(REPEATING, greedy(7, ignore_eos=True), use_tqdm=False)
        llm = LLM(path, speculative_config={"method": "ngram", "num_speculative_tokens": 8}, **config)
        spec = llm.generate(REPEATING, greedy(7, ignore_eos=True), use_tqdm=False)
        assert [o["token_ids"] for o in spec] == [o["token_ids"] for o in plain]
        assert [o["finish_reason"] for o in spec] == [o["finish_reason"] for o in plain]
        assert llm.get_metrics()["spec_decode_num_accepted_tokens"] > 0


def test_seeded_sampling_with_speculation_is_reproducible(stories260k):
    params = [SamplingParams(temperature=0.8, top_p=0.9, max_tokens=40, seed=s) for s in (1, 2, 3)]
    runs = []
    for _ in range(2):
        llm = LLM(stories260k, speculative_config=NGRAM)
        runs.append([o["token_ids"] for o in llm.generate(STORY_PROMPTS[:3], params, use_tqdm=False)])
        assert llm.get_metrics()["spec_decode_num_draft_tokens"] > 0
    assert runs[0] == runs[1]
    assert len({tuple(r) for r in runs[0]}) == 3


# -- the engine loop over a model-free executor -----------------------------------------------

VOCAB = 7  # few tokens: prompt lookup and the fake model meet often


def next_token(prefix: tuple[int, ...]) -> int:
    return xxhash.xxh3_64_intdigest(np.asarray(prefix, np.int64).tobytes()) % VOCAB


def reference_tokens(prompt: list[int], params: SamplingParams) -> list[int]:
    tokens, out = list(prompt), []
    while True:
        out.append(next_token(tuple(tokens)))
        tokens.append(out[-1])
        if out[-1] in params.stop_token_ids or len(out) == params.max_tokens:
            return out


class PrefixExecutor:
    """Each KV slot holds the token prefix whose last token it was computed from (read
    from the slot before it, through the block table, as attention would); the "model"
    samples a hash of that prefix. Verifies proposals greedily, as the rejection
    sampler does for temperature 0."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        self.num_kvcache_blocks = num_blocks
        self.block_size = block_size
        self.content: dict[int, tuple[int, ...]] = {}
        self.previous = np.zeros(0, np.int64)
        self.plans: list[StepPlan] = []

    def execute(self, plan: StepPlan) -> StepResult:
        self.plans.append(plan)
        ids = plan.input_ids.copy()
        if len(plan.placeholder_index):
            assert self.previous.ndim == 1, "a placeholder read from a verify step"
            ids[plan.placeholder_index] = self.previous[plan.input_rows]
        assert (ids >= 0).all()
        rows = np.repeat(np.arange(plan.num_seqs), np.diff(plan.query_start_loc))
        prefixes = []
        for t in range(plan.num_tokens):
            pos, row = int(plan.positions[t]), rows[t]
            before = () if pos == 0 else self.content[int(slot_of(plan.block_tables[row, (pos - 1) // self.block_size],
                                                                    pos - 1, self.block_size))]
            assert len(before) == pos
            prefixes.append(before + (int(ids[t]),))
            self.content[int(plan.slot_mapping[t])] = prefixes[-1]
        targets = np.array([next_token(prefixes[i]) for i in plan.logits_indices], np.int64)
        if not plan.speculates:
            self.previous = targets
        else:
            n = plan.num_draft_tokens
            self.previous = np.full((len(n), int(n.max()) + 1), -1, np.int64)
            logits_at = np.cumsum(n + 1) - (n + 1)
            drafts_at = np.cumsum(n) - n
            for b, nb in enumerate(n):
                target, drafts = targets[logits_at[b]:logits_at[b] + nb + 1], plan.draft_token_ids[drafts_at[b]:][:nb]
                a = 0
                while a < nb and drafts[a] == target[a]:
                    a += 1
                self.previous[b, :a] = drafts[:a]
                self.previous[b, a] = target[a]
        return StepResult.start_copy(torch.from_numpy(self.previous.copy()))

    def shutdown(self) -> None:
        pass


class RandomProposer:
    """Proposes the true continuation for a random number of tokens, then random ones."""

    def __init__(self, seed: int, k: int) -> None:
        self.rng = random.Random(seed)
        self.k = k

    def propose(self, token_ids: list[int], max_proposals: int) -> np.ndarray:
        tokens, out, most = list(token_ids), [], min(self.k, max_proposals)
        num, right = self.rng.randint(0, most), self.rng.randint(0, most)
        for i in range(num):
            out.append(next_token(tuple(tokens)) if i < right else self.rng.randrange(VOCAB))
            tokens.append(out[-1])
        return np.asarray(out, np.int64)


requests = st.lists(st.tuples(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=24),  # prompt
                              st.integers(1, 14),  # max_tokens
                              st.sets(st.integers(0, VOCAB - 1), max_size=1),  # stop tokens
                              st.integers(0, 5),  # arrival step
                              st.one_of(st.none(), st.integers(1, 12))),  # abort after this many steps
                    min_size=1, max_size=6)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reqs=requests, overlap=st.booleans(), prefix_caching=st.sampled_from(["none", "hash", "radix"]),
       budget=st.integers(2, 40), max_num_seqs=st.integers(1, 4), block_size=st.sampled_from([1, 2, 4]),
       spare_blocks=st.integers(0, 8), chunked=st.booleans(), k=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_engine_loop_with_random_acceptance(tiny_checkpoints, reqs, overlap, prefix_caching, budget, max_num_seqs,
                                            block_size, spare_blocks, chunked, k, seed):
    longest = max(len(p) + m for p, m, _, _, _ in reqs)
    if not chunked:
        budget = 64
    num_blocks = -(-longest // block_size) + spare_blocks
    config = EngineConfig(model=str(tiny_checkpoints["qwen3"]), overlap_scheduling=overlap,
                          prefix_caching=prefix_caching, kvcache_block_size=block_size, num_kvcache_blocks=num_blocks,
                          max_num_batched_tokens=budget, max_num_seqs=max_num_seqs, enable_chunked_prefill=chunked,
                          max_model_len=64, speculative_config={"method": "ngram", "num_speculative_tokens": k})
    executor = PrefixExecutor(num_blocks, block_size)
    engine = LLMEngine(config, executor=executor)
    engine.scheduler.proposer = RandomProposer(seed, k)
    schedule = engine.scheduler.schedule

    def checked_schedule():
        """Before the step runs: every slot a row reads holds exactly its own tokens."""
        out = schedule()
        for item in out.scheduled:
            seq = item.seq
            for p in range(min(item.start, seq.num_tokens)):
                slot = int(slot_of(seq.block_table[p // block_size], p, block_size))
                assert executor.content.get(slot) == tuple(seq.token_ids[: p + 1]), "wrong KV served"
            assert len(item.draft_token_ids) <= min(k, seq.sampling_params.max_tokens - seq.num_output_tokens - 1)
        return out

    engine.scheduler.schedule = checked_schedule
    arrivals = sorted((arrive, i) for i, (_, _, _, arrive, _) in enumerate(reqs))
    seqs, aborts, step = {}, {}, 0
    while arrivals or engine.has_unfinished():
        while arrivals and arrivals[0][0] <= step:
            i = arrivals.pop(0)[1]
            prompt, max_tokens, stops, _, abort_after = reqs[i]
            params = greedy(max_tokens, stop_token_ids=sorted(stops), ignore_eos=True)
            seqs[i] = engine.make_sequence(prompt, params)
            engine.add_sequence(seqs[i])
            if abort_after is not None:
                aborts[step + abort_after] = aborts.get(step + abort_after, []) + [seqs[i].seq_id]
        for seq_id in aborts.pop(step, []):
            engine.abort(seq_id)
        step += 1
        assert step < 2000, "no progress"
        if engine.has_unfinished():
            engine.step()
            plan = executor.plans[-1] if executor.plans else None
            if plan is not None:
                assert plan.num_seqs <= max_num_seqs and plan.num_tokens <= budget
    for seq in seqs.values():
        expected = reference_tokens(seq.prompt_token_ids, seq.sampling_params)
        if seq.finish_reason == "abort":
            assert seq.output_token_ids == expected[: seq.num_output_tokens]
        else:
            assert seq.output_token_ids == expected
        stats = seq.spec_decode_stats
        assert 0 <= stats.num_accepted_tokens <= stats.num_draft_tokens
    assert not engine.requests
    assert engine.kv_cache.num_free_blocks == num_blocks
    alloc = engine.kv_cache.allocator
    assert all(r in (0, 1) for r in alloc.ref_counts)
    if prefix_caching == "none":
        assert alloc.num_free_blocks == num_blocks
    metrics = engine.get_metrics()  # engine-wide counts are the requests' (a verify row of an aborted one is not counted)
    assert metrics["spec_decode_num_drafts"] == sum(seq.spec_decode_stats.num_drafts for seq in seqs.values())
    assert metrics["spec_decode_num_accepted_tokens"] == sum(s.spec_decode_stats.num_accepted_tokens for s in seqs.values())


def test_rollback_frees_trailing_blocks_tail_first():
    from tutorial_engine.block_manager import KVCacheManager
    from tutorial_engine.sequence import Sequence

    kv = KVCacheManager(8, 2)
    seq = Sequence(0, [1, 2, 3], greedy(8))
    assert kv.allocate_slots(seq, 3)
    kv.advance(seq, 3)
    assert kv.allocate_slots(seq, 5)  # the last token and 4 proposals: positions 3..7, blocks 1..3
    kv.advance(seq, 5)
    assert len(seq.block_table) == 4
    tail = seq.block_table[2:]
    kv.rollback(seq, 5)  # one proposal accepted: positions 0..4 stay, in blocks 0..2
    assert seq.num_computed_tokens == 5 and len(seq.block_table) == 3
    assert kv.allocator.free_block_ids[-1] == tail[-1]
    with pytest.raises(ValueError, match="only 5 are computed"):
        kv.rollback(seq, 6)


def test_serve_cli_takes_speculative_config_json(tiny_checkpoints):
    import argparse

    from tutorial_engine.serving.cli import add_engine_arguments, engine_options

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(["--speculative-config", '{"method": "ngram", "num_speculative_tokens": 3}'])
    config = EngineConfig(model=str(tiny_checkpoints["qwen3"]), **engine_options(args))
    assert config.speculative_config.method == "ngram" and config.speculative_config.num_speculative_tokens == 3


# -- draft-model proposals ------------------------------------------------------------------


@pytest.mark.parametrize("prefix_caching", ["none", "radix"])
def test_book_draft_model_keeps_greedy_outputs(prefix_caching):
    prompts = ["The import statement", PASSAGE + "\n\nExceptions are a means of", "A class"]
    plain = LLM(TRAINED_MODEL).generate(prompts, greedy(32), use_tqdm=False)
    llm = LLM(TRAINED_MODEL, prefix_caching=prefix_caching, kvcache_block_size=4, num_kvcache_blocks=40,
              speculative_config={"model": str(DRAFT_OUT), "num_speculative_tokens": 3})
    spec = llm.generate(prompts, greedy(32), use_tqdm=False)
    assert [o["token_ids"] for o in spec] == [o["token_ids"] for o in plain]
    metrics = llm.get_metrics()
    assert 0 < metrics["spec_decode_num_accepted_tokens"] < metrics["spec_decode_num_draft_tokens"]
    assert_all_blocks_back(llm)
    llm.shutdown()


@pytest.mark.parametrize("overlap", [False, True])
def test_a_draft_identical_to_the_target_accepts_every_proposal(stories260k, overlap):
    prompts = STORY_PROMPTS
    llm = LLM(stories260k, overlap_scheduling=overlap, kvcache_block_size=4, num_kvcache_blocks=40,
              max_num_batched_tokens=24, speculative_config={"model": str(stories260k), "num_speculative_tokens": 4})
    outs = llm.generate(prompts, greedy(40, stop_token_ids=[1]), use_tqdm=False)
    eos = llm.engine.eos_token_ids | {1}
    for prompt, out in zip(prompts, outs):
        assert out["token_ids"] == hf_greedy(stories260k, llm.tokenizer(prompt).input_ids, 40, eos)
    metrics = llm.get_metrics()
    assert metrics["num_preemptions"] > 0
    assert metrics["spec_decode_num_draft_tokens"] > 0
    assert metrics["spec_decode_acceptance_rate"] == 1.0
    assert_all_blocks_back(llm)


def test_a_random_draft_of_another_seed_keeps_tiny_outputs(tiny_checkpoints, tmp_path):
    from tutorial_engine.book.tiny import write_tiny_checkpoint

    path = tiny_checkpoints["qwen3"]
    draft = write_tiny_checkpoint(tmp_path / "draft", "qwen3", seed=1, num_hidden_layers=1)
    llm = LLM(path, kvcache_block_size=4, speculative_config={"model": str(draft), "num_speculative_tokens": 2})
    outs = llm.generate(REPEATING, greedy(16, ignore_eos=True), use_tqdm=False)
    for prompt, out in zip(REPEATING, outs):
        assert out["token_ids"] == hf_greedy(path, llm.tokenizer(prompt).input_ids, 16)
    assert llm.get_metrics()["spec_decode_num_draft_tokens"] > 0


def test_ngram_on_two_tensor_parallel_ranks(tiny_checkpoints):
    """Rank 0 verifies and broadcasts each row's emitted tokens ([S, K + 1]) to the other rank."""
    path = tiny_checkpoints["qwen3"]
    llm = LLM(path, tensor_parallel_size=2, kvcache_block_size=4, cpu_kvcache_space_gib=0.01, speculative_config=NGRAM)
    try:
        outs = llm.generate(REPEATING, greedy(16, ignore_eos=True), use_tqdm=False)
        for prompt, out in zip(REPEATING, outs):
            assert out["token_ids"] == hf_greedy(path, llm.tokenizer(prompt).input_ids, 16)
        assert llm.get_metrics()["spec_decode_num_accepted_tokens"] > 0
    finally:
        llm.shutdown()
