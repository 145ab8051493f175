"""Engine counters, exposed by ``LLM.get_metrics()``, and latency summaries of
``LLM.generate`` outputs."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .scheduler import SchedulerOutput


@dataclass
class Metrics:
    """Cumulative counts since the engine started.

    A *decode* token is the single new token of a sequence that already produced
    output; every other scheduled token (prompt, chunk, recompute after preemption)
    counts as *prefill*.
    """

    num_steps: int = 0
    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0
    num_preemptions: int = 0
    num_chunked_prefill_steps: int = 0
    prefix_cache_queried_tokens: int = 0
    prefix_cache_hit_tokens: int = 0
    batched_tokens_per_step: list[int] = field(default_factory=list)

    def record_step(self, out: SchedulerOutput) -> None:
        self.num_preemptions += len(out.preempted)
        if out.is_empty:
            return
        self.num_steps += 1
        self.batched_tokens_per_step.append(out.num_batched_tokens)
        partial = False
        for item in out.scheduled:
            seq = item.seq
            is_decode = item.num_new_tokens == 1 and seq.num_output_tokens > 0 and seq.num_uncomputed_tokens == 1
            if is_decode:
                self.num_decode_tokens += 1
            else:
                self.num_prefill_tokens += item.num_new_tokens
            partial |= not item.samples
        self.num_chunked_prefill_steps += partial

    def record_prefix_lookup(self, num_queried_tokens: int, num_hit_tokens: int) -> None:
        """An admission looked ``num_queried_tokens`` (all of the sequence's tokens) up in
        the prefix cache and was served ``num_hit_tokens`` of them."""
        self.prefix_cache_queried_tokens += num_queried_tokens
        self.prefix_cache_hit_tokens += num_hit_tokens

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
