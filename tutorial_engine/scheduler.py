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

A planned step counts its tokens as computed at once (vLLM v1's
``_update_after_schedule`` does the same), and :meth:`Scheduler.update_from_output`
appends the sampled tokens when the step's result arrives. In the plain loop the
result arrives before the next plan; with overlap scheduling (chapter 7) the next step
is planned first, so a sequence may have a token in flight while it is scheduled
again (``Sequence.in_flight``; the rules are in ``in_flight.py``).

With speculative decoding (chapter 10) a decode row may carry proposed tokens: it
runs as an extend row of ``1 + n`` tokens (its last token and ``n`` proposals), the
budget counts all of them, and the result brings back between 1 and ``n + 1``
emitted tokens, appended one at a time with the usual stop checks; the KV cache
manager then rolls the computed count back past the rejected proposals.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .block_manager import KVCacheManager
from .config import SchedulingPolicy
from .metrics import StepStats
from .sequence import FinishReason, Sequence, SequenceStatus
from .spec_decode.metrics import SpecDecodeStats
from .spec_decode.verify import num_computed_after_verify


class Proposer(Protocol):
    """Drafts tokens for a decode row from the tokens on the CPU (prompt lookup's
    :class:`~tutorial_engine.spec_decode.NgramProposer`)."""

    def propose(self, token_ids: list[int], max_proposals: int | None = None) -> np.ndarray: ...


@dataclass(frozen=True)
class SchedulerConfig:
    """The limits a scheduler plans under (the engine's options of the same names)."""

    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    enable_chunked_prefill: bool = True
    policy: SchedulingPolicy = "fcfs"  # admission order: first come first served, or shortest prompt first


@dataclass
class ScheduledSequence:
    """``num_new_tokens`` of ``seq``'s uncomputed tokens run this step.

    Fixed when the step is planned: ``start``, the position of the first new token
    (the tokens computed before the step); ``will_sample``, True when the step reaches
    the sequence's last token, so its logits give the next token (a partial prefill
    chunk samples nothing); ``input_row``, for a sequence whose last token is still in
    flight, the row of the previous step's sampled tokens that holds it (else -1).

    ``draft_token_ids``: proposals that follow the sequence's last token in this row
    (speculative decoding); they are part of ``num_new_tokens``.
    """

    seq: Sequence
    num_new_tokens: int
    draft_token_ids: list[int] = field(default_factory=list)
    start: int = field(init=False)
    will_sample: bool = field(init=False)
    input_row: int = field(init=False)

    def __post_init__(self) -> None:
        seq = self.seq
        self.start = seq.num_computed_tokens
        known = self.num_new_tokens - len(self.draft_token_ids)
        self.will_sample = self.start + known == seq.num_tokens + seq.in_flight.num_tokens
        self.input_row = seq.in_flight.pending_input_row()


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    stats: StepStats = field(default_factory=StepStats)

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


class Scheduler:
    """Owns the waiting queue and the running batch.

    Args:
        config: the limits (``max_num_seqs``, ``max_num_batched_tokens``, ...).
        kv_cache: the page allocator the scheduler reserves slots from.
        eos_token_ids: tokens that finish a request unless ``ignore_eos``.
        proposer: drafts tokens for decode rows (speculative decoding), or None.
    """

    def __init__(self, config: SchedulerConfig, kv_cache: KVCacheManager, eos_token_ids: set[int],
                 proposer: Proposer | None = None) -> None:
        self.max_num_seqs = config.max_num_seqs
        self.token_budget = config.max_num_batched_tokens
        self.chunked_prefill = config.enable_chunked_prefill
        self.max_model_len = config.max_model_len
        self.policy = config.policy
        self.kv_cache = kv_cache
        self.eos_token_ids = eos_token_ids
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.proposer = proposer
        self.spec_decode_stats = SpecDecodeStats()  # engine-wide; each sequence keeps its own too

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    # -- planning ---------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput:
        """Plan one step. Never exceeds ``max_num_batched_tokens`` or ``max_num_seqs``."""
        scheduler_output = SchedulerOutput()
        if self.chunked_prefill:
            budget = self._schedule_running(scheduler_output, self.token_budget)
            if not scheduler_output.preempted:
                self._schedule_waiting(scheduler_output, budget)
        elif not self._schedule_waiting(scheduler_output, self.token_budget):
            self._schedule_running(scheduler_output, self.token_budget)
        self._update_after_schedule(scheduler_output)
        return scheduler_output

    def _schedule_running(self, scheduler_output: SchedulerOutput, budget: int) -> int:
        """Give running sequences their tokens, decodes before unfinished prefills."""
        ordered = sorted(self.running, key=lambda s: s.num_uncomputed_tokens > 1)
        scheduled_ids: set[int] = set()
        for seq in ordered:
            if budget == 0:
                break
            if seq.status is not SequenceStatus.RUNNING or seq.in_flight.ends_by_length(
                    seq.num_tokens, seq.num_prompt_tokens, seq.sampling_params.max_tokens, self.max_model_len):
                continue
            num_new = min(seq.num_uncomputed_tokens, budget)
            drafts = self._propose(seq, budget)
            if drafts and self.kv_cache.allocate_slots(seq, num_new + len(drafts)):
                scheduler_output.scheduled.append(ScheduledSequence(seq, num_new + len(drafts), drafts))
                scheduled_ids.add(seq.seq_id)
                budget -= num_new + len(drafts)
                continue  # proposals never cost a preemption: without room the row decodes plainly
            while not self.kv_cache.allocate_slots(seq, num_new):
                victims = [s for s in self.running if s.seq_id not in scheduled_ids and s is not seq]
                victim = victims[-1] if victims else seq
                self._preempt(victim, scheduler_output)
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                scheduler_output.scheduled.append(ScheduledSequence(seq, num_new))
                scheduled_ids.add(seq.seq_id)
                budget -= num_new
        return budget

    def _propose(self, seq: Sequence, budget: int) -> list[int]:
        """Proposals for a decode row whose last token is on the CPU, at most as many as
        the budget, ``max_tokens`` and ``max_model_len`` leave room for: a verify row
        emits up to one token more than it proposes."""
        if (self.proposer is None or seq.in_flight.num_tokens or seq.num_uncomputed_tokens != 1
                or seq.num_output_tokens == 0):
            return []
        cap = min(budget - 1, seq.sampling_params.max_tokens - seq.num_output_tokens - 1,
                  self.max_model_len - seq.num_tokens - 1)
        return self.proposer.propose(seq.token_ids, cap).tolist() if cap > 0 else []

    def _next_waiting(self) -> Sequence:
        """The queued request to admit next: the oldest (``fcfs``; a preempted request
        is put back at the front), or the one with the fewest tokens to compute
        (``sjf``, shortest job first, ties first come first served). SJF cuts the
        mean wait when short and long prompts mix, at the risk of starving long ones."""
        if self.policy == "sjf":
            return min(self.waiting, key=lambda s: s.num_tokens)
        return self.waiting[0]

    def _schedule_waiting(self, scheduler_output: SchedulerOutput, budget: int) -> bool:
        """Admit queued requests, in the order of the scheduling policy, while budget,
        batch slots and pages last. Returns True if any was admitted."""
        admitted = False
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self._next_waiting()
            if seq.in_flight.num_tokens:  # preempted with a token in flight: admit it once it arrived
                break
            num_hit = self.kv_cache.match_prefix(seq)  # cached prefix pages: nothing to compute
            num_new = min(seq.num_uncomputed_tokens, budget)
            too_long = num_new < seq.num_uncomputed_tokens and not self.chunked_prefill
            if too_long or not self.kv_cache.allocate_slots(seq, num_new):
                self.kv_cache.free(seq)  # hand the matched pages back; retry next step
                break
            if self.kv_cache.prefix_cache is not None:
                scheduler_output.stats.prefix_queried_tokens += seq.num_tokens
                scheduler_output.stats.prefix_hit_tokens += num_hit
            if seq.num_preemptions == 0:
                seq.num_cached_tokens = num_hit
            self.waiting.remove(seq)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            scheduler_output.scheduled.append(ScheduledSequence(seq, num_new))
            budget -= num_new
            admitted = True
        return admitted

    def _preempt(self, seq: Sequence, scheduler_output: SchedulerOutput) -> None:
        self.kv_cache.free(seq)
        seq.num_preemptions += 1
        seq.status = SequenceStatus.WAITING
        self.running.remove(seq)
        self.waiting.appendleft(seq)
        scheduler_output.preempted.append(seq)

    def _update_after_schedule(self, scheduler_output: SchedulerOutput) -> None:
        """Commit the plan: count its tokens as computed, note which row of the step's
        sampled tokens each sampling sequence will find its token in, and fill the
        step's statistics."""
        stats = scheduler_output.stats
        stats.num_preemptions = len(scheduler_output.preempted)
        row = 0
        for item in scheduler_output.scheduled:
            seq = item.seq
            if (item.num_new_tokens - len(item.draft_token_ids) == 1 and item.will_sample
                    and item.start >= seq.num_prompt_tokens):
                stats.num_decode_tokens += item.num_new_tokens
            else:
                stats.num_prefill_tokens += item.num_new_tokens
            stats.has_partial_prefill |= not item.will_sample
            self.kv_cache.advance(seq, item.num_new_tokens)
            if item.will_sample:
                seq.in_flight.launch(row)
                row += 1

    # -- results ----------------------------------------------------------------------

    def update_from_output(self, scheduler_output: SchedulerOutput,
                           sampled_token_ids: list[int] | list[list[int]]) -> list[Sequence]:
        """The step ``scheduler_output`` ran: append its sampled tokens (per sampling sequence, in
        scheduled order, one token, or a verify row's list of emitted tokens), let the
        prefix cache publish full pages, and finish (and free) the sequences that stop.
        A sequence that already finished while this step was in flight (overlap
        scheduling) drops its tokens. Returns the sequences that finished."""
        now = time.perf_counter()
        tokens = iter(sampled_token_ids)
        finished = []
        for item in scheduler_output.scheduled:
            seq = item.seq
            emitted = next(tokens) if item.will_sample else None
            if seq.is_finished:  # it ended while this step was in flight: drop the token
                continue
            if emitted is not None:
                seq.in_flight.arrive()
                emitted = emitted if isinstance(emitted, list) else [emitted]
                if item.draft_token_ids:
                    self._accept(item, num_accepted=len(emitted) - 1)
                reason = None
                for token in emitted:  # one at a time: a stop ends the row, later tokens are dropped
                    seq.token_ids.append(token)
                    seq.token_times.append(now)
                    if seq.first_token_time is None:
                        seq.first_token_time = now
                    reason = self._finish_reason(seq, token)
                    if reason is not None:
                        break
                if reason is not None:
                    self.finish(seq, reason)
                    finished.append(seq)
                    continue
            if seq.status is SequenceStatus.RUNNING:
                # After the append: a step launched since may already count this token as computed.
                self.kv_cache.cache_blocks(seq, item.num_new_tokens)
        return finished

    def _accept(self, item: ScheduledSequence, num_accepted: int) -> None:
        """A verify row kept ``num_accepted`` of its proposals: count them, and roll the
        sequence's computed tokens back past the rejected ones (before any page of
        theirs could reach the prefix cache)."""
        num_drafts = len(item.draft_token_ids)
        item.seq.spec_decode_stats.record(num_drafts, num_accepted)
        self.spec_decode_stats.record(num_drafts, num_accepted)
        self.kv_cache.rollback(item.seq, num_computed_after_verify(item.start, num_drafts, num_accepted))

    def _finish_reason(self, seq: Sequence, token: int) -> FinishReason | None:
        params = seq.sampling_params
        if (not params.ignore_eos and token in self.eos_token_ids) or token in params.stop_token_ids:
            return "stop"
        if seq.num_output_tokens >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """End ``seq`` (``reason``: "stop", "length" or "abort") and free its pages, once.
        A step still in flight may write its pages: later steps run after it."""
        if seq.is_finished:
            return
        seq.finish_reason = reason
        if seq.status is SequenceStatus.RUNNING:
            self.kv_cache.free(seq)
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
