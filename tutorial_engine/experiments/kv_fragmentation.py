"""How much reserved KV-cache memory holds real tokens: paging vs contiguous reservation.

Drives the engine's own :class:`Scheduler` and page allocator through a seeded
workload with a stand-in model (every step "samples" token 0), so it runs on a CPU
in seconds. After each step it counts, over the running requests:

* ``tokens``: K/V entries actually stored (the token states);
* ``paged``: slots in the pages they hold (the last page of a request is partly empty);
* what contiguous per-request reservation would hold for the same requests, the
  three policies of the vLLM paper's Orca baselines (Kwon et al., SOSP 2023, section
  6.2 and Figure 2): ``max`` reserves ``max_model_len`` slots, ``pow2`` the next
  power of two of prompt + output length, ``oracle`` exactly prompt + output length.

Utilization of a policy = sum of ``tokens`` / sum of its reserved slots over all steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..block_manager import KVCacheManager
from ..config import EngineConfig
from ..sampling_params import SamplingParams
from ..scheduler import Scheduler, SchedulerConfig
from ..sequence import Sequence

POLICIES = ("paged", "oracle", "pow2", "max")


@dataclass
class MemoryTrace:
    """Per-step KV-cache slot counts (one entry per engine step)."""

    tokens: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    reserved: dict[str, list[int]] = field(default_factory=lambda: {p: [] for p in POLICIES})

    def utilization(self, policy: str) -> float:
        """Fraction of the policy's reserved slots that hold a token, over the whole run."""
        return sum(self.tokens) / sum(self.reserved[policy])


def simulate(config: EngineConfig, prompt_lens: list[int], output_lens: list[int], max_model_len: int,
             num_blocks: int) -> MemoryTrace:
    """Run the workload through the scheduler and allocator; all requests arrive at once.

    ``config`` supplies ``max_num_seqs``, ``max_num_batched_tokens``, chunked prefill and
    ``kvcache_block_size``. Raises ValueError when a request cannot fit ``max_model_len``.
    """
    for p, o in zip(prompt_lens, output_lens):
        if p + o > max_model_len:
            raise ValueError(f"prompt {p} + output {o} tokens exceed max_model_len={max_model_len}; raise it.")
    block_size = config.kvcache_block_size
    scheduler = Scheduler(SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens, max_model_len,
                                          config.enable_chunked_prefill), KVCacheManager(num_blocks, block_size), set())
    for i, (p, o) in enumerate(zip(prompt_lens, output_lens)):
        scheduler.add(Sequence(i, [0] * p, SamplingParams(temperature=0.0, max_tokens=o, ignore_eos=True)))
    trace = MemoryTrace()
    while scheduler.has_unfinished():
        out = scheduler.schedule()
        scheduler.update_from_output(out, [0] * sum(s.will_sample for s in out.scheduled))
        running = scheduler.running
        trace.tokens.append(sum(s.num_computed_tokens for s in running))
        trace.running.append(len(running))
        finals = [s.num_prompt_tokens + s.sampling_params.max_tokens for s in running]
        trace.reserved["paged"].append(sum(len(s.block_table) for s in running) * block_size)
        trace.reserved["oracle"].append(sum(finals))
        trace.reserved["pow2"].append(sum(1 << (n - 1).bit_length() for n in finals))
        trace.reserved["max"].append(len(running) * max_model_len)
    return trace
