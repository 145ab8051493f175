"""A failure in the middle of a step (an exception, Ctrl-C) or a second thread must
not poison an LLM: the failed call's requests are aborted, every page comes back,
and the next call gives the same tokens as a fresh engine."""

from __future__ import annotations

import threading

import pytest

from tutorial_engine import LLM, SamplingParams

PROMPTS = ["Once upon a time", "Lily saw a big dog", "One day, Tom and his mom went to the park. They"]
PARAMS = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)


def fail_on_call(llm: LLM, n: int, error: BaseException) -> None:
    """Make the model runner raise ``error`` on its ``n``-th step from now (once)."""
    runner = llm.engine.executor.runner
    original, calls = runner.execute, [0]

    def execute(plan):
        calls[0] += 1
        if calls[0] == n:
            raise error
        return original(plan)

    runner.execute = execute


def assert_clean(llm: LLM) -> None:
    engine = llm.engine
    assert not engine.requests and not engine.has_unfinished()
    assert not engine.scheduler.waiting and not engine.scheduler.running
    assert engine.kv_cache.num_free_blocks == engine.num_kvcache_blocks


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("error", [RuntimeError("kernel failed"), KeyboardInterrupt()])
@pytest.mark.parametrize("prefix_caching", ["none", "hash", "radix"])
@pytest.mark.parametrize("fail_at", [1, 2, 5])
def test_failed_step_aborts_the_call_and_the_next_call_is_clean(stories260k, overlap, error, prefix_caching,
                                                                 fail_at):
    """Pages of one-token blocks, so that with overlap a request's still-unknown input
    token lies in a full page when the step fails: nothing the failed steps should
    have written may be published to the prefix cache."""
    fresh = LLM(stories260k, prefix_caching=prefix_caching, kvcache_block_size=1)
    expected = fresh.generate(PROMPTS, PARAMS, use_tqdm=False)
    llm = LLM(stories260k, overlap_scheduling=overlap, prefix_caching=prefix_caching, kvcache_block_size=1)
    fail_on_call(llm, fail_at, error)
    with pytest.raises(type(error)):  # the original error, not one raised while recovering
        llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    assert_clean(llm)
    assert llm.generate([], PARAMS, use_tqdm=False) == []
    retry = llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    assert [o["token_ids"] for o in retry] == [o["token_ids"] for o in expected]
    if fail_at == 1:  # the very first prefill failed: no page was ever written
        assert [o["num_cached_tokens"] for o in retry] == [0] * len(PROMPTS)
    assert_clean(llm)


def test_failed_step_names_the_aborted_requests(stories260k):
    llm = LLM(stories260k)
    fail_on_call(llm, 2, RuntimeError("kernel failed"))
    with pytest.raises(RuntimeError) as info:
        llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    assert any("aborted the requests" in note for note in getattr(info.value, "__notes__", []))


def test_second_thread_is_refused_while_one_generates(stories260k):
    llm = LLM(stories260k)
    started, release = threading.Event(), threading.Event()
    runner = llm.engine.executor.runner
    original = runner.execute

    def slow_execute(plan):
        started.set()
        release.wait(timeout=30)
        return original(plan)

    runner.execute = slow_execute
    results = []
    worker = threading.Thread(target=lambda: results.append(llm.generate(PROMPTS, PARAMS, use_tqdm=False)))
    worker.start()
    assert started.wait(timeout=30)
    with pytest.raises(RuntimeError, match="already generating in another thread"):
        llm.generate("Lily", PARAMS, use_tqdm=False)
    release.set()
    worker.join(timeout=60)
    runner.execute = original
    assert len(results) == 1 and len(results[0]) == len(PROMPTS)
    assert_clean(llm)


@pytest.mark.parametrize("prefix_caching", ["none", "hash", "radix"])
def test_abort_frees_pages_at_once(stories260k, prefix_caching):
    """A client that leaves mid-stream: its request is aborted while a step with its
    still-unknown input token is in flight (one-token pages put that token in a full page)."""
    llm = LLM(stories260k, overlap_scheduling=True, kvcache_block_size=1, prefix_caching=prefix_caching)
    engine = llm.engine
    seqs = [engine.make_sequence(p, PARAMS) for p in PROMPTS]
    for seq in seqs:
        engine.add_sequence(seq)
    for _ in range(3):
        engine.step()
    engine.abort(seqs[0].seq_id)
    assert seqs[0].finish_reason == "abort" and not seqs[0].block_table
    while engine.has_unfinished():
        engine.step()
    assert [len(s.output_token_ids) for s in seqs[1:]] == [20, 20]
    assert_clean(llm)
