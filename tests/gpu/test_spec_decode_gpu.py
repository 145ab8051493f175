"""Speculative decoding on a real GPU (skipped without CUDA): with Triton attention and
CUDA graphs, n-gram and draft-model speculation give plain decoding's greedy tokens,
with the plain and the overlapped loop and with the radix prefix cache, and give every
KV block back. float32, on the book's small model and the draft distilled from it."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from pydoc_data.topics import topics  # noqa: E402

from tutorial_engine import LLM, SamplingParams  # noqa: E402
from tutorial_engine.book import TRAINED_MODEL  # noqa: E402
from tutorial_engine.book.train_tiny import DRAFT_OUT  # noqa: E402

PASSAGE = " ".join(topics["exceptions"].split()[:40])
PROMPTS = ["Exceptions are", PASSAGE + "\n\n" + " ".join(PASSAGE.split()[:6]), "The for statement", "A"] * 2
MAX_TOKENS = [32, 40, 17, 5] * 2

SPECULATION = {
    "ngram": {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 1, "prompt_lookup_max": 4},
    "draft": {"model": str(DRAFT_OUT), "num_speculative_tokens": 4},
}


def greedy(speculative_config, **options) -> tuple[list[list[int]], dict]:
    params = [SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in MAX_TOKENS]
    with LLM(str(TRAINED_MODEL), dtype="float32", speculative_config=speculative_config, **options) as llm:
        assert llm.engine.executor.runner.graphs is not None  # decode steps replay CUDA graphs
        tokens = [o["token_ids"] for o in llm.generate(PROMPTS, params, use_tqdm=False)]
        assert llm.engine.kv_cache.num_free_blocks == llm.engine.num_kvcache_blocks
        return tokens, llm.get_metrics()


@pytest.mark.parametrize("overlap_scheduling", [False, True])
@pytest.mark.parametrize("prefix_caching", ["none", "radix"])
@pytest.mark.parametrize("method", ["ngram", "draft"])
def test_speculation_keeps_greedy_tokens(method, prefix_caching, overlap_scheduling):
    options = dict(attention_backend="triton", prefix_caching=prefix_caching, overlap_scheduling=overlap_scheduling,
                   kvcache_block_size=16)
    plain, _ = greedy(None, **options)
    speculated, metrics = greedy(SPECULATION[method], **options)
    assert speculated == plain
    assert metrics["spec_decode_num_accepted_tokens"] > 0  # the proposals were verified, not skipped
