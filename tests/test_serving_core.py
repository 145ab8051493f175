"""Streaming without HTTP: incremental detokenization (spaces, multi-byte characters),
stop strings in ``generate`` and ``stream``, ``abort`` with a reason, and the
scheduler's admission order under ``scheduling_policy``."""

from __future__ import annotations

import pytest

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.book.tiny import build_tokenizer
from tutorial_engine.config import EngineConfig
from tutorial_engine.detokenizer import IncrementalDetokenizer, decode_output

GREEDY = SamplingParams(temperature=0, max_tokens=40)


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "overlap"])
def stories(request, stories260k):
    with LLM(str(stories260k), overlap_scheduling=request.param) as llm:
        yield llm


def stream_pieces(tokenizer, prompt_ids, output_ids):
    detok = IncrementalDetokenizer(tokenizer, prompt_ids)
    pieces = [detok.add([t]) for t in output_ids]
    return pieces + [detok.flush()]


def test_first_word_keeps_its_space(stories):
    out = stories.generate("The little dog", GREEDY, use_tqdm=False)[0]
    assert out["text"].startswith(" was")  # was "dogwas" when each output was decoded on its own
    pieces = list(stories.stream("The little dog", GREEDY))
    assert "".join(pieces) == out["text"] and len(pieces) > 10


def test_multibyte_characters_come_out_whole():
    tokenizer = build_tokenizer()  # byte-level BPE: "é" and the emoji span several tokens
    text = " héllo wörld 🙂 ok ✓"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert len(ids) > len(text.split())
    prompt = tokenizer("Once upon", add_special_tokens=False).input_ids
    pieces = stream_pieces(tokenizer, prompt, ids)
    assert "".join(pieces) == text == decode_output(tokenizer, prompt, ids)
    assert not any("\ufffd" in p for p in pieces)


def test_an_unfinished_character_is_flushed_at_the_end():
    tokenizer = build_tokenizer()
    ids = tokenizer(" ok 🙂", add_special_tokens=False).input_ids
    pieces = stream_pieces(tokenizer, [1], ids[:-1])  # the emoji's last byte never comes
    assert "\ufffd" not in "".join(pieces[:-1]) and pieces[-1].endswith("\ufffd")


@pytest.mark.parametrize("stop", [["Lily"], [". ", "girl"], "named"])
def test_stop_strings_end_generation_and_are_cut(stories, stop):
    full = stories.generate("Once upon a time", GREEDY, use_tqdm=False)[0]
    params = SamplingParams(temperature=0, max_tokens=40, stop=stop)
    out = stories.generate("Once upon a time", params, use_tqdm=False)[0]
    stops = [stop] if isinstance(stop, str) else stop
    cut = min(full["text"].find(s) for s in stops if s in full["text"])
    assert out["text"] == full["text"][:cut] and out["finish_reason"] == "stop"
    assert len(out["token_ids"]) < len(full["token_ids"])
    assert "".join(stories.stream("Once upon a time", params)) == out["text"]
    engine = stories.engine
    assert not engine.requests and engine.kv_cache.num_free_blocks == engine.num_kvcache_blocks


def test_a_stop_string_that_never_appears_changes_nothing(stories):
    full = stories.generate("Once upon a time", GREEDY, use_tqdm=False)[0]
    out = stories.generate("Once upon a time", SamplingParams(temperature=0, max_tokens=40, stop=["zebra"]),
                           use_tqdm=False)[0]
    assert out["text"] == full["text"] and out["finish_reason"] == "length"


def test_closing_a_stream_early_frees_its_pages(stories):
    stream = stories.stream("Once upon a time", SamplingParams(temperature=0, max_tokens=200, ignore_eos=True))
    assert next(stream) and next(stream)
    stream.close()
    engine = stories.engine
    assert not engine.requests and engine.kv_cache.num_free_blocks == engine.num_kvcache_blocks
    assert stories.generate("Once", GREEDY, use_tqdm=False)[0]["text"]  # the LLM is free again


@pytest.mark.parametrize("bad, error", [(dict(stop=[""]), ValueError), (dict(stop=[1]), TypeError),
                                        (dict(stop=None), TypeError)])
def test_stop_is_validated(bad, error):
    with pytest.raises(error, match="stop="):
        SamplingParams(**bad)
    assert SamplingParams(stop="\n\n").stop == ("\n\n",)


def test_abort_records_its_reason(stories):
    engine = stories.engine
    seq = engine.make_sequence("Once upon a time", GREEDY)
    engine.add_sequence(seq)
    engine.abort(seq.seq_id, reason="stop")
    assert seq.finish_reason == "stop" and not engine.has_unfinished()


def admission_order(model, policy):
    """Prompt lengths in the order one-at-a-time admission serves them."""
    with LLM(model, scheduling_policy=policy, max_num_seqs=1) as llm:
        lengths = [30, 5, 20, 5, 10]
        prompts = [[1] + list(range(10, 9 + n)) for n in lengths]
        outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True), use_tqdm=False)
        order = sorted(range(len(outs)), key=lambda i: outs[i]["ttft"])
        return [lengths[i] for i in order]


def test_scheduling_policies(stories260k):
    assert admission_order(str(stories260k), "fcfs") == [30, 5, 20, 5, 10]
    assert admission_order(str(stories260k), "sjf") == [5, 5, 10, 20, 30]
    with pytest.raises(ValueError, match="scheduling_policy"):
        EngineConfig(model=str(stories260k), scheduling_policy="lifo")


def test_stream_validates_at_the_call(stories):
    with pytest.raises(ValueError, match="empty"):
        stories.stream("", GREEDY)  # before any iteration
    with pytest.raises(TypeError, match="SamplingParams"):
        stories.stream("Once", {"max_tokens": 3})
