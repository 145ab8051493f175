"""Chunked prefill and mixed batches (Sarathi-Serve, Agrawal et al., OSDI 2024).

What must hold: splitting a prompt across steps never changes greedy tokens; a step
never exceeds ``max_num_batched_tokens``; running decodes are served before prompt
chunks; a partial chunk samples nothing; TTFT/ITL/TPOT are measured per request.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from tutorial_engine import LLM, SamplingParams
from tutorial_engine import scheduler as scheduler_module
from tutorial_engine.attention import AttentionMetadata
from tutorial_engine.attention.torch_backend import paged_attention, store_kvcache
from tutorial_engine.block_manager import KVCacheManager
from tutorial_engine.metrics import Metrics, summarize_latency
from tutorial_engine.scheduler import Scheduler, SchedulerConfig
from tutorial_engine.sequence import Sequence

GREEDY = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)


def random_prompts(lengths: list[int], vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[1] + [rng.randrange(3, vocab) for _ in range(n - 1)] for n in lengths]


def hf_greedy(path, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    outs = []
    for p in prompts:
        ids = model.generate(torch.tensor([p]), max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                             do_sample=False, pad_token_id=0)
        outs.append(ids[0, len(p):].tolist())
    return outs


# -- attention over a chunk whose earlier tokens are already paged -------------------------


def test_torch_backend_chunk_attends_to_cached_prefix():
    """Prefilling a sequence chunk by chunk through the paged cache (shuffled pages,
    GQA, a decode sharing the step) gives the same output as one dense causal pass."""
    torch.manual_seed(0)
    heads, kv_heads, dim, block_size, num_blocks = 4, 2, 8, 4, 32
    k_cache = torch.zeros(num_blocks, block_size, kv_heads, dim)
    v_cache = torch.zeros_like(k_cache)
    lengths = {"long": 37, "short": 6}
    q = {n: torch.randn(L, heads, dim) for n, L in lengths.items()}
    k = {n: torch.randn(L, kv_heads, dim) for n, L in lengths.items()}
    v = {n: torch.randn(L, kv_heads, dim) for n, L in lengths.items()}
    pages = torch.randperm(num_blocks).tolist()
    tables = {"long": pages[:10], "short": pages[10:12]}
    # Each step: (name, start, end) of the new tokens; the short one prefills then decodes
    # while the long one arrives in chunks of 10, 1, 16 and 10 tokens.
    steps = [[("short", 0, 5)], [("short", 5, 6), ("long", 0, 10)], [("long", 10, 11)],
             [("long", 11, 27)], [("long", 27, 37)]]
    got = {n: torch.empty(L, heads, dim) for n, L in lengths.items()}
    for step in steps:
        starts, seq_lens, slots = [0], [], []
        for name, a, b in step:
            starts.append(starts[-1] + b - a)
            seq_lens.append(b)
            slots += [tables[name][p // block_size] * block_size + p % block_size for p in range(a, b)]
        width = max(len(tables[n]) for n, _, _ in step)
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots), query_start_loc=torch.tensor(starts, dtype=torch.int32),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
            block_tables=torch.tensor([tables[n] + [0] * (width - len(tables[n])) for n, _, _ in step],
                                      dtype=torch.int32),
            max_query_len=max(b - a for _, a, b in step), max_seq_len=max(seq_lens),
            query_start_loc_cpu=starts, seq_lens_cpu=seq_lens)
        store_kvcache(torch.cat([k[n][a:b] for n, a, b in step]), torch.cat([v[n][a:b] for n, a, b in step]),
                      k_cache, v_cache, meta.slot_mapping)
        out = paged_attention(torch.cat([q[n][a:b] for n, a, b in step]), k_cache, v_cache, meta, dim**-0.5)
        for i, (name, a, b) in enumerate(step):
            got[name][a:b] = out[starts[i]:starts[i + 1]]
    for name in lengths:
        ref = F.scaled_dot_product_attention(
            q[name].transpose(0, 1), k[name].repeat_interleave(2, 1).transpose(0, 1),
            v[name].repeat_interleave(2, 1).transpose(0, 1), is_causal=True, scale=dim**-0.5).transpose(0, 1)
        torch.testing.assert_close(got[name], ref, rtol=1e-5, atol=1e-5)


# -- greedy parity: chunking on, chunking off, transformers --------------------------------


@pytest.mark.parametrize("arch", ["stories260k", "qwen3", "llama", "qwen2"])
def test_chunked_prefill_keeps_greedy_tokens(arch, tiny_checkpoints, request):
    """Prompts several times the 13-token budget (chunk edges off the 8-token pages)
    decode to the same tokens with chunking on, off, and in transformers."""
    path = request.getfixturevalue("stories260k") if arch == "stories260k" else tiny_checkpoints[arch]
    prompts = random_prompts([70, 5, 33, 13, 120], vocab=512)
    common = dict(max_model_len=160, kvcache_block_size=8)
    on = LLM(path, max_num_batched_tokens=13, **common)
    off = LLM(path, enable_chunked_prefill=False, max_num_batched_tokens=160, **common)
    tokens_on = [o["token_ids"] for o in on.generate(prompts, GREEDY, use_tqdm=False)]
    tokens_off = [o["token_ids"] for o in off.generate(prompts, GREEDY, use_tqdm=False)]
    assert tokens_on == tokens_off == hf_greedy(path, prompts, GREEDY.max_tokens)
    m_on, m_off = on.get_metrics(), off.get_metrics()
    assert max(m_on["batched_tokens_per_step"]) <= 13 and m_on["num_chunked_prefill_steps"] >= 120 // 13
    assert m_off["num_chunked_prefill_steps"] == 0 and max(m_off["batched_tokens_per_step"]) > 13


def _run_with_late_long_prompt(path, chunked: bool, budget: int):
    """Three short requests start decoding; after 3 steps a 100-token prompt arrives.
    Returns (per-step list of (seq_id, num_new_tokens, samples), outputs by seq_id)."""
    llm = LLM(path, enable_chunked_prefill=chunked, max_num_batched_tokens=budget, max_model_len=128,
              kvcache_block_size=8)
    engine = llm.engine
    short, long_ = random_prompts([6, 9, 4], vocab=512, seed=1), random_prompts([100], vocab=512, seed=2)[0]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    seqs = [engine.make_sequence(p, params) for p in short]
    for s in seqs:
        engine.add_sequence(s)
    plans = []
    original = engine.scheduler.schedule

    def recording_schedule():
        out = original()
        plans.append([(s.seq.seq_id, s.num_new_tokens, s.will_sample) for s in out.scheduled])
        return out

    engine.scheduler.schedule = recording_schedule
    for _ in range(3):
        engine.step()
    seqs.append(engine.make_sequence(long_, params))
    engine.add_sequence(seqs[-1])
    while engine.has_unfinished():
        engine.step()
    return plans, {s.seq_id: s.output_token_ids for s in seqs}, short + [long_]


def test_mixed_steps_keep_decodes_running_and_tokens_unchanged(tiny_checkpoints):
    """With chunking a long prompt that arrives mid-decode is prefilled in chunks that
    share steps with the running decodes, which never skip a step; without it one
    prefill-only step stalls them. Greedy tokens are the same either way."""
    path = tiny_checkpoints["qwen3"]
    plans_on, out_on, prompts = _run_with_late_long_prompt(path, True, 16)
    plans_off, out_off, _ = _run_with_late_long_prompt(path, False, 128)
    assert out_on == out_off
    assert list(out_on.values()) == hf_greedy(path, prompts, 12)
    long_id = 3
    chunks = [n for plan in plans_on for sid, n, _ in plan if sid == long_id and n > 1]
    assert chunks == [13, 13, 13, 13, 13, 13, 13, 9]  # 16-token budget minus 3 decodes
    mixed = [plan for plan in plans_on if any(sid == long_id for sid, _, _ in plan) and len(plan) > 1]
    assert len(mixed) >= 8
    # Every step, while the long prompt is prefilling, each short request decodes one token.
    for plan in plans_on[3:11]:
        assert {sid for sid, n, samples in plan if sid != long_id and n == 1 and samples} == {0, 1, 2}
    # Without chunking the long prompt's step runs alone: the short requests stall.
    assert [(long_id, 100, True)] in plans_off


# -- the scheduler alone: the budget, splitting, decode-first ------------------------------


def make_scheduler(model_dir, budget: int, max_num_seqs: int, num_blocks: int, block_size: int,
                   chunked: bool = True, max_model_len: int = 4096) -> Scheduler:
    config = SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=budget, max_model_len=max_model_len,
                             enable_chunked_prefill=chunked)
    return Scheduler(config, KVCacheManager(num_blocks, block_size), eos_token_ids={2})


def test_long_prompt_is_split_and_partial_chunks_sample_nothing(tiny_checkpoints):
    sched = make_scheduler(tiny_checkpoints["qwen3"], budget=16, max_num_seqs=4, num_blocks=16, block_size=8)
    seq = Sequence(0, list(range(3, 103)), SamplingParams(max_tokens=2, ignore_eos=True))
    sched.add(seq)
    plans, metrics = [], Metrics()
    while sched.has_unfinished():
        out = sched.schedule()
        metrics.record_step(out.stats)
        plans.append([(s.num_new_tokens, s.will_sample) for s in out.scheduled])
        sched.update_from_output(out, [7] * sum(s.will_sample for s in out.scheduled))
    assert plans == [[(16, False)]] * 6 + [[(4, True)], [(1, True)]]
    assert seq.output_token_ids == [7, 7]
    assert metrics.num_chunked_prefill_steps == 6
    assert metrics.batched_tokens_per_step == [16] * 6 + [4, 1]
    assert (metrics.num_prefill_tokens, metrics.num_decode_tokens) == (100, 1)


workloads = st.lists(st.tuples(st.integers(1, 80), st.integers(1, 12), st.integers(0, 6)), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(workload=workloads, budget=st.integers(1, 48), max_num_seqs=st.integers(1, 5),
       block_size=st.sampled_from([1, 4, 16]), spare_blocks=st.integers(0, 12))
def test_scheduler_invariants_on_random_workloads(tiny_checkpoints, workload, budget, max_num_seqs, block_size,
                                                  spare_blocks):
    """Requests (prompt length, max_tokens, arrival step) under random budgets and cache
    sizes (tight enough to preempt): every step stays within the token budget and the
    batch size, schedules decodes before prompt chunks, samples only at the end of a
    prompt, and every request finishes with all its pages returned."""
    longest = max(p + m for p, m, _ in workload)
    num_blocks = -(-longest // block_size) + spare_blocks
    sched = make_scheduler(tiny_checkpoints["qwen3"], budget, max_num_seqs, num_blocks, block_size)
    pending = sorted(((arrive, Sequence(i, [5] * p, SamplingParams(max_tokens=m, ignore_eos=True)))
                      for i, (p, m, arrive) in enumerate(workload)), key=lambda x: x[0])
    seqs = [s for _, s in pending]
    step, metrics = 0, Metrics()
    while pending or sched.has_unfinished():
        while pending and pending[0][0] <= step:
            sched.add(pending.pop(0)[1])
        step += 1
        assert step < 10_000, "no progress"
        if not sched.has_unfinished():
            continue
        waiting_decodes = {s.seq_id for s in sched.running if s.num_uncomputed_tokens == 1}
        out = sched.schedule()
        metrics.record_step(out.stats)
        assert 0 < out.num_batched_tokens <= budget or (out.is_empty and out.preempted)
        assert len(out.scheduled) <= max_num_seqs
        assert len({s.seq.seq_id for s in out.scheduled}) == len(out.scheduled)
        for item in out.scheduled:
            assert 1 <= item.num_new_tokens and item.start + item.num_new_tokens <= item.seq.num_tokens
            assert item.will_sample == (item.start + item.num_new_tokens == item.seq.num_tokens)
            assert item.seq.num_computed_tokens == item.start + item.num_new_tokens  # advanced when planned
        scheduled = {s.seq.seq_id for s in out.scheduled}
        if any(s.start < s.seq.num_tokens - 1 for s in out.scheduled):  # a prompt chunk ran...
            preempted = {s.seq_id for s in out.preempted}
            assert waiting_decodes - preempted <= scheduled  # ...so every running decode got its token first
        sched.update_from_output(out, [9] * sum(s.will_sample for s in out.scheduled))
    assert all(s.num_output_tokens == s.sampling_params.max_tokens for s in seqs)
    assert sched.kv_cache.num_free_blocks == num_blocks
    assert sum(metrics.batched_tokens_per_step) == metrics.num_prefill_tokens + metrics.num_decode_tokens
    if not metrics.num_preemptions:
        assert metrics.num_prefill_tokens == sum(p for p, _, _ in workload)


# -- per-request latency: TTFT, ITL, TPOT --------------------------------------------------


class StepClock:
    """Stands in for ``time`` in the scheduler: the clock reads the step count."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_ttft_itl_tpot_count_steps(tiny_checkpoints, monkeypatch):
    """With a clock that ticks once per step, a 3-token prompt finishes in step 1 and
    a 40-token prompt behind it under a 16-token budget gets its first token in step 3
    (chunks 13, 16, 11), then one token per step."""
    llm = LLM(tiny_checkpoints["llama"], max_num_batched_tokens=16, max_model_len=128)
    monkeypatch.setattr(scheduler_module, "time", StepClock())
    make_sequence = llm.engine.make_sequence

    def arriving_at_zero(prompt, params):
        seq = make_sequence(prompt, params)
        seq.arrival_time = 0.0
        return seq

    monkeypatch.setattr(llm.engine, "make_sequence", arriving_at_zero)
    short, long_ = random_prompts([3, 40], vocab=512)
    params = [SamplingParams(temperature=0, max_tokens=1, ignore_eos=True),
              SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)]
    outs = llm.generate([short, long_], params, use_tqdm=False)
    assert llm.get_metrics()["batched_tokens_per_step"] == [16, 16, 11, 1, 1, 1, 1]
    assert outs[0]["ttft"] == 1.0 and outs[0]["itl"] == [] and outs[0]["tpot"] is None
    assert outs[1]["ttft"] == 3.0 and outs[1]["itl"] == [1.0] * 4 and outs[1]["tpot"] == 1.0
    summary = summarize_latency(outs)
    assert summary["ttft_p50"] == 2.0 and summary["ttft_p99"] == pytest.approx(2.98)
    assert summary["itl_p50"] == summary["itl_p99"] == 1.0 and summary["tpot_mean"] == 1.0


def test_summarize_latency_percentiles():
    outs = [{"ttft": t, "itl": [0.1 * t] * 3, "tpot": 0.1 * t} for t in (1.0, 2.0, 3.0, 4.0)]
    summary = summarize_latency(outs, percentiles=(50, 100))
    assert summary["ttft_p50"] == 2.5 and summary["ttft_p100"] == 4.0
    assert summary["itl_p100"] == pytest.approx(0.4) and summary["tpot_mean"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no outputs"):
        summarize_latency([])
