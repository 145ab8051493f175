"""Prefix caching in the engine: greedy tokens never change (none == hash == radix,
and == transformers), the counters are exact on a hand-computed example, the cache
survives eviction pressure and preemption, and a hash collision never serves wrong KV."""

from __future__ import annotations

import random

import pytest

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.prefix_cache import hash_cache

from reference import hf_greedy

MODES = ("none", "hash", "radix")
STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the park."
STORY_PROMPTS = [STORY + " One day, she saw a big dog.", STORY + " She had a red ball.", STORY, "Tom was sad."]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)


def shared_prefix_prompts(seed: int, vocab: int, num: int = 6, prefix_len: int = 37) -> list[list[int]]:
    """Prompts sharing a ``prefix_len`` token prefix, with tails of different lengths,
    and one that diverges inside the prefix."""
    rng = random.Random(seed)
    prefix = [1] + [rng.randrange(3, vocab) for _ in range(prefix_len - 1)]
    prompts = [prefix + [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 20))] for _ in range(num - 1)]
    return prompts + [prefix[:21] + [rng.randrange(3, vocab) for _ in range(9)]]


def run(path, mode: str, waves: list[list], max_tokens: int = 8, **config) -> tuple[list[dict], dict, LLM]:
    """Generate each wave after the previous one finished (so later waves can hit)."""
    llm = LLM(path, prefix_caching=mode, **config)
    outs = [o for wave in waves for o in llm.generate(wave, greedy(max_tokens), use_tqdm=False)]
    kv = llm.engine.kv_cache
    assert kv.num_free_blocks == llm.engine.num_kvcache_blocks  # nothing leaked
    return outs, llm.get_metrics(), llm


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_tiny_models_same_tokens_with_every_cache(tiny_checkpoints, arch):
    path = tiny_checkpoints[arch]
    prompts = shared_prefix_prompts(0, 500)
    waves = [prompts[:2], prompts[2:], prompts]  # the last wave repeats everything: full hits
    results = {m: run(path, m, waves, kvcache_block_size=4, max_num_batched_tokens=32) for m in MODES}
    tokens = {m: [o["token_ids"] for o in outs] for m, (outs, _, _) in results.items()}
    assert tokens["hash"] == tokens["none"] and tokens["radix"] == tokens["none"]
    assert tokens["none"][:2] == [hf_greedy(path, p, 8) for p in prompts[:2]]
    for mode in ("hash", "radix"):
        assert results[mode][1]["prefix_cache_hit_tokens"] > 0
        assert results[mode][1]["num_prefill_tokens"] < results["none"][1]["num_prefill_tokens"]


def test_stories260k_same_text_with_every_cache(stories260k):
    waves = [STORY_PROMPTS[:1], STORY_PROMPTS]
    results = {m: run(stories260k, m, waves, max_tokens=24, kvcache_block_size=8) for m in MODES}
    texts = {m: [o["text"] for o in outs] for m, (outs, _, _) in results.items()}
    assert texts["hash"] == texts["none"] == texts["radix"]
    assert all(results[m][0][1]["num_cached_tokens"] > 0 for m in ("hash", "radix"))


@pytest.mark.parametrize("arch", ["qwen3", "stories260K"])
def test_eviction_pressure_and_preemption_keep_tokens(request, tiny_checkpoints, arch):
    """So few blocks that cached blocks are evicted and running requests preempted;
    a readmitted request matches again (its peers' and its own published blocks)."""
    path = request.getfixturevalue("stories260k") if arch == "stories260K" else tiny_checkpoints[arch]
    prompts = shared_prefix_prompts(1, 500, num=6)
    waves = [prompts[:3], prompts[::-1]]
    config = dict(kvcache_block_size=4, num_kvcache_blocks=20, max_num_batched_tokens=48)
    results = {m: run(path, m, waves, max_tokens=12, **config) for m in MODES}
    reference = [o["token_ids"] for o in results["none"][0]]
    for mode in ("hash", "radix"):
        outs, metrics, _ = results[mode]
        assert [o["token_ids"] for o in outs] == reference
        assert metrics["num_preemptions"] > 0 and metrics["prefix_cache_hit_tokens"] > 0


def test_token_granular_radix_keeps_tokens(tiny_checkpoints):
    """Page size 1 is SGLang's default token-granular tree: it also matches inside
    what would be a block, and still never changes the tokens."""
    path = tiny_checkpoints["qwen3"]
    waves = [shared_prefix_prompts(2, 500)[:3], shared_prefix_prompts(2, 500)]
    none, _, _ = run(path, "none", waves, kvcache_block_size=1)
    radix, metrics, _ = run(path, "radix", waves, kvcache_block_size=1)
    assert [o["token_ids"] for o in radix] == [o["token_ids"] for o in none]
    assert radix[-1]["num_cached_tokens"] == 21  # diverges after 21 tokens: no block rounding


def test_counters_on_a_hand_computed_example(tiny_checkpoints):
    """Block size 4. Request A (10 tokens) runs alone and generates 3 tokens, so 12
    tokens are computed (the last sampled token never is): blocks [0:4] [4:8] [8:12].
    Request B shares A's first 9 tokens and has 12: at most 11 may come from the cache,
    in whole blocks: 8 (hash and radix alike); token-granular radix serves 9.
    Request C repeats A's 10 prompt tokens exactly: 8 (a full hit keeps one token,
    rounded down to blocks). Queried tokens are all the tokens of each admission."""
    path = tiny_checkpoints["qwen3"]
    a = list(range(10, 20))
    b = a[:9] + [40, 41, 42]
    c = list(a)
    expected = {("hash", 4): [0, 8, 8], ("radix", 4): [0, 8, 8], ("radix", 1): [0, 9, 9],
                ("hash", 1): [0, 9, 9], ("none", 4): [0, 0, 0]}
    for (mode, block_size), hits in expected.items():
        llm = LLM(path, prefix_caching=mode, kvcache_block_size=block_size)
        outs = [llm.generate([p], greedy(3), use_tqdm=False)[0] for p in (a, b, c)]
        metrics = llm.get_metrics()
        assert [o["num_cached_tokens"] for o in outs] == hits, (mode, block_size)
        assert metrics["prefix_cache_hit_tokens"] == sum(hits)
        assert metrics["prefix_cache_queried_tokens"] == (0 if mode == "none" else 10 + 12 + 10)
        assert metrics["num_prefill_tokens"] == 10 + 12 + 10 - sum(hits)


def test_one_token_prompt_and_exact_block_prompt(tiny_checkpoints):
    """A prompt never comes entirely from the cache: its last token is computed."""
    path = tiny_checkpoints["qwen3"]
    for mode in ("hash", "radix"):
        llm = LLM(path, prefix_caching=mode, kvcache_block_size=4)
        for prompt, hit in (([7], 0), ([7], 0), (list(range(3, 11)), 0), (list(range(3, 11)), 4)):
            out = llm.generate([prompt], greedy(2), use_tqdm=False)[0]
            assert out["num_cached_tokens"] == hit, (mode, prompt)


def test_hash_collisions_never_serve_wrong_kv(tiny_checkpoints, monkeypatch):
    """Every block hashes to the same value: lookups then find other prefixes' blocks,
    and only the token and parent checks keep the outputs right."""
    path = tiny_checkpoints["qwen3"]
    prompts = shared_prefix_prompts(3, 500)
    waves = [prompts[:3], prompts]
    reference, _, _ = run(path, "none", waves, kvcache_block_size=4)
    monkeypatch.setattr(hash_cache, "block_hash", lambda parent_hash, token_ids: 7)
    colliding, metrics, llm = run(path, "hash", waves, kvcache_block_size=4)
    assert [o["token_ids"] for o in colliding] == [o["token_ids"] for o in reference]
    assert len(llm.engine.kv_cache.prefix_cache.table) == 1  # one slot for every block
    assert metrics["prefix_cache_hit_tokens"] > 0  # the first block of the shared prefix still hits
