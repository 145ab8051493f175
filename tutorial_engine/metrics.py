"""Engine counters, exposed by ``LLM.get_metrics()``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

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
