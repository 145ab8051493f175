"""The two ways the server runs the engine, for tests that run against both: the engine
core in its own process (``AsyncLLM``, the default) and the loop in a thread of the
server (``AsyncEngine``, ``serve --engine-core inproc``)."""

from __future__ import annotations

import time

from tutorial_engine.config import EngineConfig
from tutorial_engine.engine import LLMEngine
from tutorial_engine.serving import AsyncEngine, AsyncLLM

ENGINE_CORES = ["process", "inproc"]


def make_engine(model, engine_core: str, max_queued_requests=None, **config):
    """``(async_engine, engine)``: what the app serves, and the object holding the
    tokenizer and ``requests`` the test inspects (the in-process ``LLMEngine``, or the
    ``AsyncLLM`` with its mirrors of the core's requests)."""
    config = EngineConfig(model=str(model), **config)
    if engine_core == "process":
        async_llm = AsyncLLM(config, max_queued_requests)
        return async_llm, async_llm
    engine = LLMEngine(config)
    return AsyncEngine(engine, max_queued_requests), engine


def wait_idle(async_engine, timeout: float = 10.0) -> None:
    """Wait until the engine has retired every request and every KV-cache page is free
    (the engine's own stats: published by its thread, or sent by the core process)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = async_engine.stats
        if not async_engine.requests and not (stats.num_running or stats.num_waiting or stats.kv_cache_usage):
            return
        assert time.monotonic() < deadline, f"requests left: {list(async_engine.requests)}, {stats}"
        time.sleep(0.01)
