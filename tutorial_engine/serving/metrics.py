"""Prometheus metrics at ``GET /metrics``, named after vLLM's where they mean the same.

Gauges read the engine's latest :class:`EngineStats` when scraped (sent by the engine
core after each step, or published by the engine thread); histograms and counters are
fed as requests finish. The CPU-time and busy-time gauges are what ``bench serve
--compare-engine-core`` reads before and after a run: each process's own accounting.
Each app has its own registry, so several servers (tests, a notebook) can live in one
process.
"""

from __future__ import annotations

import math
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..output_processor import RequestOutput
from .async_engine import AsyncEngine
from .async_llm import AsyncLLM

# Seconds; from 1 ms (a tiny model's step on a CPU) to a minute (a long queue).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0)
TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15,
                0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
PREFIX = "tutorial_engine"


class ServerMetrics:
    """The server's Prometheus collectors, in a registry of their own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, engine: AsyncLLM | AsyncEngine) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        Gauge(f"{PREFIX}_num_requests_running", "Requests in the running batch.",
              registry=r).set_function(lambda: engine.stats.num_running)
        Gauge(f"{PREFIX}_num_requests_waiting", "Requests waiting to be admitted.",
              registry=r).set_function(lambda: engine.stats.num_waiting)
        Gauge(f"{PREFIX}_kv_cache_usage_perc", "Fraction of KV-cache pages in use (0 to 1).",
              registry=r).set_function(lambda: engine.stats.kv_cache_usage)
        Gauge(f"{PREFIX}_engine_steps", "Engine steps since start.",
              registry=r).set_function(lambda: engine.stats.num_steps)
        Gauge(f"{PREFIX}_engine_cpu_seconds", "CPU seconds of the process that runs the engine loop, "
              "as of its last step (the server's own when the loop is a thread).",
              registry=r).set_function(lambda: engine.stats.cpu_s)
        Gauge(f"{PREFIX}_server_cpu_seconds", "CPU seconds of the API server process.",
              registry=r).set_function(time.process_time)
        Gauge(f"{PREFIX}_device_busy_seconds", "Seconds of steps queued on the simulated device (NaN on a real one).",
              registry=r).set_function(lambda: math.nan if engine.stats.device_busy_s is None
                                       else engine.stats.device_busy_s)
        for name, what in (("spec_decode_num_drafts", "Speculative verify steps, counted per sequence."),
                           ("spec_decode_num_draft_tokens", "Speculative tokens proposed."),
                           ("spec_decode_num_accepted_tokens", "Speculative tokens accepted.")):
            Gauge(f"{PREFIX}_{name}", what, registry=r).set_function(
                lambda name=name: getattr(engine.stats, name))
        self.ttft = Histogram(f"{PREFIX}_time_to_first_token_seconds", "Time to first token.",
                              buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram(f"{PREFIX}_time_per_output_token_seconds",
                              "Mean time per output token after the first, per request.", buckets=TPOT_BUCKETS,
                              registry=r)
        self.requests = Counter(f"{PREFIX}_request_success", "Finished requests.", ["finished_reason"], registry=r)
        self.prompt_tokens = Counter(f"{PREFIX}_prompt_tokens", "Prompt tokens of finished requests.", registry=r)
        self.generation_tokens = Counter(f"{PREFIX}_generation_tokens", "Generated tokens of finished requests.",
                                         registry=r)

    def observe(self, out: RequestOutput) -> None:
        """Record a request's last output."""
        self.requests.labels(out.finish_reason).inc()
        self.prompt_tokens.inc(out.num_prompt_tokens)
        self.generation_tokens.inc(out.num_output_tokens)
        if out.ttft is not None:
            self.ttft.observe(out.ttft)
        if out.tpot is not None:
            self.tpot.observe(out.tpot)

    def render(self) -> bytes:
        return generate_latest(self.registry)
