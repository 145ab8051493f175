"""The book's draft model: same tokenizer as the book's model, loadable by the engine."""

from __future__ import annotations

import json

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.book.train_tiny import DEFAULT_OUT, DRAFT_OUT
from tutorial_engine.loader import load_hf_config
from tutorial_engine.spec_decode import check_draft_compatible


def test_the_draft_shares_the_tokenizer_and_is_smaller():
    assert (DRAFT_OUT / "tokenizer.json").read_bytes() == (DEFAULT_OUT / "tokenizer.json").read_bytes()
    draft, target = load_hf_config(DRAFT_OUT), load_hf_config(DEFAULT_OUT)
    check_draft_compatible(draft, target)
    summary = json.loads((DRAFT_OUT / "training.json").read_text())
    assert summary["parameters"] * 2 < json.loads((DEFAULT_OUT / "training.json").read_text())["parameters"]
    assert (DRAFT_OUT / "model.safetensors").stat().st_size < 2_000_000


def test_the_engine_runs_the_draft_and_it_writes_prose():
    with LLM(str(DRAFT_OUT), device="cpu", num_kvcache_blocks=16) as llm:
        text = llm.generate(["The import statement"], SamplingParams(temperature=0, max_tokens=12))[0]["text"]
    assert sum(word.isalpha() for word in text.split()) >= 3
