"""Engine counters, exposed by ``LLM.get_metrics()``, and latency summaries of
``LLM.generate`` outputs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class StepStats:
    """What one planned step did, filled in by the scheduler as it plans.

    A *decode* token is the single new token of a sequence that already produced
    output; every other scheduled token (prompt, chunk, recompute after preemption)
    counts as *prefill*. ``has_partial_prefill``: some sequence got a prompt chunk
    that does not reach its end (a chunked-prefill step).
    """

    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0
    num_preemptions: int = 0
    has_partial_prefill: bool = False
    prefix_queried_tokens: int = 0
    prefix_hit_tokens: int = 0


@dataclass
class Metrics:
    """Cumulative counts since the engine started, summed from :class:`StepStats`.

    With overlap scheduling a request that stops on an EOS or stop token runs one
    extra decode step whose token is dropped; it is counted here.
    """

    num_steps: int = 0
    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0
    num_preemptions: int = 0
    num_chunked_prefill_steps: int = 0
    prefix_cache_queried_tokens: int = 0
    prefix_cache_hit_tokens: int = 0
    batched_tokens_per_step: list[int] = field(default_factory=list)

    def record_step(self, stats: StepStats) -> None:
        """Add a step's counts. A step that ran nothing (only preemptions) adds its
        preemptions but is not counted as a step."""
        self.num_preemptions += stats.num_preemptions
        num_batched = stats.num_prefill_tokens + stats.num_decode_tokens
        self.prefix_cache_queried_tokens += stats.prefix_queried_tokens
        self.prefix_cache_hit_tokens += stats.prefix_hit_tokens
        if num_batched == 0:
            return
        self.num_steps += 1
        self.batched_tokens_per_step.append(num_batched)
        self.num_prefill_tokens += stats.num_prefill_tokens
        self.num_decode_tokens += stats.num_decode_tokens
        self.num_chunked_prefill_steps += stats.has_partial_prefill

    def as_dict(self) -> dict:
        return asdict(self)


def summarize_latency(outputs: list[dict], percentiles: tuple[float, ...] = (50, 90, 99)) -> dict[str, float]:
    """Serving-latency summary of ``LLM.generate`` outputs, in seconds.

    Returns ``ttft_pNN`` (time to first token) and ``itl_pNN`` (inter-token latency,
    pooled over all requests' gaps) for each percentile (linear interpolation, as
    ``numpy.percentile``), and ``tpot_mean``, the mean over requests of their time
    per output token after the first (vLLM's benchmark definitions). A statistic with
    no samples (e.g. ITL when every request made one token) is NaN. Kept out of
    ``get_metrics()`` on purpose: those counters are deterministic, timings are not.

    Raises:
        ValueError: when ``outputs`` is empty.
    """
    if not outputs:
        raise ValueError("no outputs to summarize; pass the list LLM.generate returned.")
    samples = {
        "ttft": [o["ttft"] for o in outputs],
        "itl": [gap for o in outputs for gap in o["itl"]],
    }
    summary = {}
    for name, values in samples.items():
        for q in percentiles:
            summary[f"{name}_p{q:g}"] = float(np.percentile(values, q)) if values else math.nan
    tpots = [o["tpot"] for o in outputs if o["tpot"] is not None]
    summary["tpot_mean"] = float(np.mean(tpots)) if tpots else math.nan
    return summary
