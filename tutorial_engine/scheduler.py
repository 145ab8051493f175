"""Continuous batching under a per-step token budget.

Every step the scheduler decides which sequences run and how many of their
uncomputed tokens each gets, then the model runner executes that plan. Sequences
join and leave the running batch at step granularity ("iteration-level
scheduling", Orca, Yu et al., OSDI 2022). With ``enable_chunked_prefill`` the step
is Sarathi-Serve style (Agrawal et al., OSDI 2024): running decodes first, then
what remains of the ``max_num_batched_tokens`` budget goes to prompt chunks, so one
step may mix decodes and (partial) prefills. Without it a step is either all
prefill (whole prompts) or all decode, as in nano-vLLM.

On admission a sequence first takes the pages of its longest cached prefix from
the prefix cache (if one is on) and is scheduled only for the rest of its tokens.

When the KV cache runs out of pages the most recently admitted sequence is
preempted by *recompute* (vLLM, Kwon et al., SOSP 2023, section 4.5): its pages are
freed and it returns to the front of the queue, keeping its generated tokens.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from .block_manager import KVCacheManager
from .config import EngineConfig
from .metrics import Metrics
from .sequence import Sequence, SequenceStatus


@dataclass
class ScheduledSequence:
    """``num_new_tokens`` of ``seq``'s uncomputed tokens run this step.

    ``samples`` is fixed when the step is planned: True when the step reaches the
    sequence's last token, so its logits give the next token. A partial prefill
    chunk samples nothing.
    """

    seq: Sequence
    num_new_tokens: int
    samples: bool = field(init=False)

    def __post_init__(self) -> None:
        self.samples = self.seq.num_computed_tokens + self.num_new_tokens == self.seq.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    """Owns the waiting queue and the running batch.

    Args:
        config: engine limits (``max_num_seqs``, ``max_num_batched_tokens``, ...).
        kv_cache: the page allocator the scheduler reserves slots from.
        eos_token_ids: tokens that finish a request unless ``ignore_eos``.
        metrics: counters updated as steps are planned and finished.
    """

    def __init__(self, config: EngineConfig, max_model_len: int, kv_cache: KVCacheManager,
                 eos_token_ids: set[int], metrics: Metrics) -> None:
        self.max_num_seqs = config.max_num_seqs
        self.token_budget = config.max_num_batched_tokens
        self.chunked_prefill = config.enable_chunked_prefill
        self.max_model_len = max_model_len
        self.kv_cache = kv_cache
        self.eos_token_ids = eos_token_ids
        self.metrics = metrics
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # -- planning ---------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Plan one step. Never exceeds ``max_num_batched_tokens`` or ``max_num_seqs``."""
        out = SchedulerOutput()
        if self.chunked_prefill:
            budget = self._schedule_running(out, self.token_budget)
            if not out.preempted:
                self._schedule_waiting(out, budget)
        elif not self._schedule_waiting(out, self.token_budget):
            self._schedule_running(out, self.token_budget)
        self.metrics.record_step(out)
        return out

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        """Give running sequences their tokens, decodes before unfinished prefills."""
        ordered = sorted(self.running, key=lambda s: s.num_uncomputed_tokens > 1)
        scheduled_ids: set[int] = set()
        for seq in ordered:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING:  # preempted earlier in this loop
                continue
            num_new = min(seq.num_uncomputed_tokens, budget)
            while not self.kv_cache.allocate_slots(seq, num_new):
                victims = [s for s in self.running if s.seq_id not in scheduled_ids and s is not seq]
                victim = victims[-1] if victims else seq
                self._preempt(victim, out)
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                out.scheduled.append(ScheduledSequence(seq, num_new))
                scheduled_ids.add(seq.seq_id)
                budget -= num_new
        return budget

    def _schedule_waiting(self, out: SchedulerOutput, budget: int) -> bool:
        """Admit queued requests first-come first-served while budget, batch slots
        and pages last. Returns True if any was admitted."""
        admitted = False
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            num_hit = self.kv_cache.match_prefix(seq)  # cached prefix pages: nothing to compute
            num_new = min(seq.num_uncomputed_tokens, budget)
            too_long = num_new < seq.num_uncomputed_tokens and not self.chunked_prefill
            if too_long or not self.kv_cache.allocate_slots(seq, num_new):
                self.kv_cache.free(seq)  # hand the matched pages back; retry next step
                seq.num_computed_tokens = 0
                break
            if self.kv_cache.prefix_cache is not None:
                self.metrics.record_prefix_lookup(seq.num_tokens, num_hit)
            if seq.num_preemptions == 0:
                seq.num_cached_tokens = num_hit
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append(ScheduledSequence(seq, num_new))
            budget -= num_new
            admitted = True
        return admitted

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        self.kv_cache.free(seq)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        self.running.remove(seq)
        self.waiting.appendleft(seq)
        out.preempted.append(seq)

    # -- results ----------------------------------------------------------------------

    def update(self, out: SchedulerOutput, sampled_token_ids: list[int]) -> list[Sequence]:
        """Advance each scheduled sequence; append sampled tokens (one per sampling
        sequence, in scheduled order); finish and free those that stop.
        Returns the sequences that finished this step."""
        now = time.perf_counter()
        tokens = iter(sampled_token_ids)
        finished = []
        for item in out.scheduled:
            seq = item.seq
            seq.num_computed_tokens += item.num_new_tokens
            self.kv_cache.cache_blocks(seq, item.num_new_tokens)
            if not item.samples:
                continue
            token = next(tokens)
            seq.token_ids.append(token)
            seq.token_times.append(now)
            if seq.first_token_time is None:
                seq.first_token_time = now
            seq.finish_reason = self._finish_reason(seq, token)
            if seq.finish_reason is not None:
                seq.status = SequenceStatus.FINISHED
                self.kv_cache.free(seq)
                self.running.remove(seq)
                finished.append(seq)
        return finished

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        params = seq.sampling_params
        if (not params.ignore_eos and token in self.eos_token_ids) or token in params.stop_token_ids:
            return "stop"
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None
