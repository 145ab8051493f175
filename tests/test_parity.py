"""Greedy tokens identical to transformers (float32, CPU) through the paged engine."""

from __future__ import annotations

import pytest
import torch

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.scheduler import ScheduledSequence, SchedulerOutput
from tutorial_engine.step_plan import build_step_plan
from tutorial_engine.sequence import Sequence

from reference import hf_greedy, hf_model

STORY_PROMPTS = ["Once upon a time", "Lily saw a big dog", "The dog was happy. They played all day. The end.",
                 "One day, Tom and his mom went to the park. They"]
TEXT_PROMPTS = ["Hello world", "The cache is cut into pages", "A", "Requests arrive at any time and the scheduler"]


def greedy(n: int, **kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, **kw)


def test_stories260k_matches_transformers_text(stories260k):
    llm = LLM(stories260k)
    out = llm.generate("Once upon a time", greedy(32), use_tqdm=False)[0]
    ids = llm.tokenizer("Once upon a time").input_ids
    assert out["token_ids"] == hf_greedy(stories260k, ids, 32, llm.engine.eos_token_ids)
    assert out["text"].startswith(", there was a little girl named Lily.")


def test_stories260k_batch_of_mixed_lengths_stops(stories260k):
    # llama2.c stories end with BOS (id 1) before the next story, so BOS is a stop token here.
    llm = LLM(stories260k, max_num_seqs=3)  # fewer slots than prompts: requests join as others finish
    outs = llm.generate(STORY_PROMPTS, greedy(160, stop_token_ids=[1]), use_tqdm=False)
    eos = llm.engine.eos_token_ids | {1}
    for prompt, out in zip(STORY_PROMPTS, outs):
        ids = llm.tokenizer(prompt).input_ids
        assert out["prompt_token_ids"] == ids
        assert out["token_ids"] == hf_greedy(stories260k, ids, 160, eos)
        assert out["finish_reason"] == ("stop" if out["token_ids"][-1] in eos else "length")
    assert any(o["finish_reason"] == "stop" for o in outs)


@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen2"])
def test_tiny_models_batch_matches_transformers(tiny_checkpoints, arch):
    path = tiny_checkpoints[arch]
    llm = LLM(path, kvcache_block_size=4)
    outs = llm.generate(TEXT_PROMPTS, greedy(12, ignore_eos=True), use_tqdm=False)
    for prompt, out in zip(TEXT_PROMPTS, outs):
        assert out["token_ids"] == hf_greedy(path, llm.tokenizer(prompt).input_ids, 12)
        assert out["finish_reason"] == "length"


@pytest.mark.parametrize("arch", ["qwen3", "llama", "stories260K"])
def test_preemption_keeps_outputs(request, tiny_checkpoints, arch):
    """So few KV blocks that running requests are preempted and recomputed."""
    stories = arch == "stories260K"
    path = request.getfixturevalue("stories260k") if stories else tiny_checkpoints[arch]
    prompts = STORY_PROMPTS if stories else TEXT_PROMPTS
    llm = LLM(path, kvcache_block_size=4, num_kvcache_blocks=12, max_num_batched_tokens=64)
    outs = llm.generate(prompts, greedy(24, ignore_eos=True), use_tqdm=False)
    assert llm.get_metrics()["num_preemptions"] > 0
    for prompt, out in zip(prompts, outs):
        assert out["token_ids"] == hf_greedy(path, llm.tokenizer(prompt).input_ids, 24)
    allocator = llm.engine.kv_cache.allocator
    assert allocator.num_free_blocks == allocator.num_blocks and not any(allocator.ref_counts)


def test_prefill_logits_close_to_transformers(tiny_checkpoints):
    path = tiny_checkpoints["qwen3"]
    llm = LLM(path, kvcache_block_size=4)
    ids = llm.tokenizer("Keys and values of earlier tokens are kept").input_ids
    seq = Sequence(0, ids, greedy(1))
    assert llm.engine.kv_cache.allocate_slots(seq, len(ids))
    runner = llm.engine.executor.runner
    inputs = runner.prepare(build_step_plan(SchedulerOutput([ScheduledSequence(seq, len(ids))]), 4))
    with torch.inference_mode():
        ours = runner.model.compute_logits(runner.model(inputs.input_ids, inputs.positions, inputs.meta))
        theirs = hf_model(path)(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_token_id_prompts_and_per_prompt_params(tiny_checkpoints):
    path = tiny_checkpoints["llama"]
    llm = LLM(path)
    outs = llm.generate([[1, 5, 9], [1, 7]], [greedy(3, ignore_eos=True), greedy(5, ignore_eos=True)], use_tqdm=False)
    assert [len(o["token_ids"]) for o in outs] == [3, 5]
    assert outs[0]["token_ids"] == hf_greedy(path, [1, 5, 9], 3)


def test_stop_token_ids_end_generation(tiny_checkpoints):
    path = tiny_checkpoints["qwen3"]
    llm = LLM(path)
    ids = llm.tokenizer("Hello world").input_ids
    expected = hf_greedy(path, ids, 8)
    out = llm.generate("Hello world", greedy(8, ignore_eos=True, stop_token_ids=[expected[3]]), use_tqdm=False)[0]
    assert out["token_ids"] == expected[: expected.index(expected[3]) + 1]
    assert out["finish_reason"] == "stop"


def test_max_model_len_caps_generation(tiny_checkpoints):
    llm = LLM(tiny_checkpoints["qwen3"], max_model_len=12)
    out = llm.generate([1, 2, 3, 4, 5], greedy(50, ignore_eos=True), use_tqdm=False)[0]
    assert len(out["token_ids"]) == 7 and out["finish_reason"] == "length"


def test_metrics_count_prefill_and_decode_tokens(tiny_checkpoints):
    llm = LLM(tiny_checkpoints["qwen3"])
    llm.generate([[1, 2, 3], [1, 2, 3, 4, 5]], greedy(4, ignore_eos=True), use_tqdm=False)
    m = llm.get_metrics()
    assert m["num_prefill_tokens"] == 8
    assert m["num_decode_tokens"] == 2 * 3  # the first token comes from prefill
    assert m["num_steps"] == 4 and m["num_preemptions"] == 0
    assert m["prefix_cache_queried_tokens"] == 0 and m["prefix_cache_hit_tokens"] == 0


def test_the_books_trained_model_matches_transformers_and_reads_well():
    """The package's own trained model (the book's default) loads through the same
    checkpoint code as a Qwen3 download, and its greedy tokens are transformers'."""
    from tutorial_engine.book import TRAINED_MODEL

    assert (TRAINED_MODEL / "config.json").is_file() and (TRAINED_MODEL / "tokenizer.json").is_file()
    llm = LLM(TRAINED_MODEL, kvcache_block_size=4)
    prompts = ["A class", "Exceptions are", "The cache is cut into pages"]
    outs = llm.generate(prompts, greedy(24), use_tqdm=False)
    for prompt, out in zip(prompts, outs):
        ids = llm.tokenizer(prompt).input_ids
        assert out["token_ids"] == hf_greedy(TRAINED_MODEL, ids, 24, llm.engine.eos_token_ids)
    assert outs[1]["text"].startswith(" a means of breaking out of the normal flow of control")


def test_model_path_defaults_to_the_trained_model_and_the_env_var_overrides(monkeypatch):
    from tutorial_engine.book import MODEL_ENV, TRAINED_MODEL, model_path

    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert model_path() == str(TRAINED_MODEL)
    monkeypatch.setenv(MODEL_ENV, "/models/Qwen3-0.6B")
    assert model_path() == "/models/Qwen3-0.6B"
