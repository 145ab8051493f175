"""``LLM`` after ``shutdown`` and with a stream left open: errors that say what happened."""

from __future__ import annotations

import pytest

from tutorial_engine import LLM, SamplingParams

PARAMS = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


def test_shutdown_is_idempotent_and_later_calls_say_so(stories260k):
    with LLM(str(stories260k)) as llm:
        llm.shutdown()
        llm.shutdown()
    for call in (lambda: llm.generate("Once", PARAMS, use_tqdm=False), lambda: list(llm.stream("Once", PARAMS))):
        with pytest.raises(RuntimeError, match="shut down"):
            call()


def test_generate_while_a_stream_is_open_in_this_thread(stories260k):
    with LLM(str(stories260k)) as llm:
        stream = llm.stream("Once", PARAMS)
        next(stream)
        with pytest.raises(RuntimeError, match="stream.*still open in this thread") as info:
            llm.generate("Once", PARAMS, use_tqdm=False)
        assert "another thread" not in str(info.value)
        stream.close()  # closing it frees the engine again
        assert llm.generate("Once", PARAMS, use_tqdm=False)[0]["token_ids"]


def test_serve_and_generate_pick_the_same_default_model(monkeypatch):
    from tutorial_engine import __main__ as main, engine
    from tutorial_engine.serving import cli

    picked = []

    class Stop(Exception):
        pass

    def fake_engine(config):
        picked.append(config.model)
        raise Stop

    monkeypatch.setattr(engine, "LLMEngine", fake_engine)
    args = main.build_parser().parse_args(["serve", "--engine-core", "inproc"])  # the engine loads in this process
    with pytest.raises(Stop):
        cli.make_app(args)
    assert picked == [main.default_model()]
