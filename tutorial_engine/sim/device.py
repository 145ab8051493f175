"""A simulated device: an executor that runs no model and sleeps instead of computing.

It measures what the *host* side of the engine costs (scheduler, step plans, front
end) on a machine without a GPU. Like a GPU it is asynchronous: :meth:`execute`
returns at once, the step joins the device's single queue (it starts when the step
before it ends, or at launch if the device is idle) and its tokens are ready when it
ends, ``step_time`` seconds later (:class:`~tutorial_engine.sim.timing.StepTimeModel`,
fitted to an NVIDIA H200). :meth:`SimStepResult.token_ids` sleeps until then, as
``StepResult.token_ids`` waits for its copy event. So overlap scheduling behaves as on
the card: the host plans step N+1 while the device "runs" step N, and the device's
busy fraction shows whether the host kept it fed.

Tokens are deterministic (so runs are reproducible, and the engine's invariants can
be checked): a sampled token is a 64-bit hash of the row's previous token (its last
input, a placeholder filled from the previous step's sampled tokens as on the device)
and its position, mixed with

* nothing else for greedy rows: like a real model's greedy output, it depends on the
  context alone, so it is the same with overlap on or off, whatever shares the batch;
* the request's ``seed`` for seeded random rows;
* the executor's seed and the request id for other random rows,

mapped into the vocabulary without the end-of-sequence ids, unless ``eos_rate`` asks
for EOS with that probability per token (requests then end early, as real ones do).

Time can run faster than real time: with ``time_scale=0.01`` a modelled 5 ms step
sleeps 50 us (tests). All durations the device reports are in *device* seconds (real
seconds divided by ``time_scale``); the clock readings it takes and returns are
``time.perf_counter()`` values.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import EngineConfig
from ..loader import eos_token_ids as checkpoint_eos_ids
from ..loader import load_hf_config, load_tokenizer
from ..model_runner import kv_cache_bytes_per_block
from ..models import DecoderSpec
from ..step_plan import StepPlan
from .timing import StepFeatures, StepTimeModel

# KV-cache sizing of the simulated card, from the memory profile in
# book/data/bench_vs_nanovllm_h200.json (NVIDIA H200, Qwen3-0.6B, gpu_memory_utilization=0.9):
# 139.801 GiB in all, 111.23 GiB of it KV cache; the rest (weights, activations,
# graph pool, CUDA context) is taken as fixed.
H200_MEMORY_GIB = 139.801
H200_NON_KV_GIB = 0.9 * H200_MEMORY_GIB - 111.23

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays: every input bit changes about half the
    output bits, so nearby (position, token) pairs give unrelated tokens."""
    x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
    x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
    x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
    return x ^ (x >> np.uint64(31))


@dataclass(frozen=True)
class StepRecord:
    """One step on the simulated device: its features, and when it was launched,
    started and ended (``time.perf_counter()`` readings)."""

    features: StepFeatures
    launched: float
    start: float
    end: float


@dataclass
class SimDeviceStats:
    """Counters of a simulated device over a window.

    Attributes:
        window_s: device seconds from the window's start to its end.
        busy_s: device seconds in the window during which a step was running.
        idle_s: ``window_s - busy_s``.
        steps: steps that started in the window.
        tokens: new tokens (prefill + decode) of those steps.
        sampled_tokens: tokens those steps sampled.
    """

    window_s: float
    busy_s: float
    steps: int
    tokens: int
    sampled_tokens: int

    @property
    def idle_s(self) -> float:
        return self.window_s - self.busy_s

    @property
    def busy_fraction(self) -> float:
        return self.busy_s / self.window_s if self.window_s > 0 else 0.0


class SimulatedDevice:
    """A single queue of steps on a modelled clock, and the record of when it ran them.

    Args:
        time_scale: real seconds per device second (1: real time; 0.01: a hundred
            times faster, for tests).
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        if not (time_scale > 0 and math.isfinite(time_scale)):
            raise ValueError(f"time_scale={time_scale!r} must be a positive finite number (1 = real time).")
        self.time_scale = time_scale
        self.steps: list[StepRecord] = []
        self.sampled: list[int] = []  # tokens each step sampled, parallel to ``steps``
        self.queued_busy_s = 0.0  # device seconds of all steps launched so far (a running total, O(1) to read)
        self._free_at = 0.0  # when the last queued step ends

    def launch(self, features: StepFeatures, duration_s: float, num_sampled: int) -> float:
        """Queue a step of ``duration_s`` device seconds; returns when it will end."""
        now = time.perf_counter()
        start = max(now, self._free_at)
        self._free_at = start + duration_s * self.time_scale
        self.steps.append(StepRecord(features, now, start, self._free_at))
        self.sampled.append(num_sampled)
        self.queued_busy_s += duration_s
        return self._free_at

    def stats(self, since: float | None = None, until: float | None = None) -> SimDeviceStats:
        """Busy time and counts between two ``time.perf_counter()`` readings: by default
        from the first launch to now (or to the end of the queued work, if later)."""
        if not self.steps:
            return SimDeviceStats(0.0, 0.0, 0, 0, 0)
        since = self.steps[0].launched if since is None else since
        until = max(time.perf_counter(), self._free_at) if until is None else until
        busy = steps = tokens = sampled = 0
        for record, num_sampled in zip(self.steps, self.sampled):
            busy += max(0.0, min(record.end, until) - max(record.start, since))
            if since <= record.start < until:
                steps += 1
                tokens += record.features.num_tokens
                sampled += num_sampled
        return SimDeviceStats((until - since) / self.time_scale, busy / self.time_scale, steps, tokens, sampled)


@dataclass
class SimStepResult:
    """A simulated step's tokens, which exist at once but are "on the device" until
    ``ready_at`` (a ``time.perf_counter()`` reading). Same interface as
    :class:`~tutorial_engine.model_runner.StepResult`."""

    tokens: np.ndarray
    ready_at: float

    def done(self) -> bool:
        return time.perf_counter() >= self.ready_at

    def token_ids(self) -> list[int]:
        """Sleep until the step has ended on the device, then return its tokens."""
        delay = self.ready_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        return self.tokens.tolist()


@dataclass
class SimulatedExecutor:
    """An :class:`~tutorial_engine.executor.Executor` over a :class:`SimulatedDevice`.

    Attributes:
        num_kvcache_blocks: KV pages the scheduler may hand out (nothing is allocated).
        vocab_size: tokens are drawn from ``[0, vocab_size)``.
        timing: the step-time model.
        device: the queue and its record (busy time, steps, tokens).
        eos_token_ids: ids never drawn, except as EOS with probability ``eos_rate``.
        eos_rate: probability that a sampled token is EOS (0: never).
        seed: mixed into random rows without their own seed.
    """

    num_kvcache_blocks: int
    vocab_size: int
    timing: StepTimeModel
    device: SimulatedDevice = field(default_factory=SimulatedDevice)
    eos_token_ids: tuple[int, ...] = ()
    eos_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.eos_token_ids = tuple(sorted(set(self.eos_token_ids)))
        if not 0 <= self.eos_rate <= 1:
            raise ValueError(f"eos_rate={self.eos_rate!r} must be a probability in [0, 1].")
        if self.eos_rate > 0 and not self.eos_token_ids:
            raise ValueError("eos_rate > 0 needs eos_token_ids: the model has no end-of-sequence token to emit.")
        if len(self.eos_token_ids) >= self.vocab_size:
            raise ValueError(f"the vocabulary of {self.vocab_size} tokens has no token that is not EOS.")
        self._previous = np.zeros(0, np.int64)  # the last launched step's sampled tokens, "on the device"

    def execute(self, plan: StepPlan) -> SimStepResult:
        """Launch one step: queue its modelled time and return at once."""
        tokens = self.sample(plan)
        self._previous = tokens
        ready_at = self.device.launch(StepFeatures.of_plan(plan), self.timing.plan_time(plan), len(tokens))
        return SimStepResult(tokens, ready_at)

    def sample(self, plan: StepPlan) -> np.ndarray:
        """The deterministic tokens of the plan's sampling rows (see the module docstring)."""
        rows = plan.logits_indices
        if len(plan.placeholder_index) and len(plan.input_rows) and plan.input_rows.max() >= len(self._previous):
            raise RuntimeError(f"the plan reads row {int(plan.input_rows.max())} of the previous step's "
                               f"tokens, which sampled only {len(self._previous)}")
        input_ids = plan.input_ids.copy()
        input_ids[plan.placeholder_index] = self._previous[plan.input_rows]
        batch = plan.sampling
        key = np.where(batch.seeds >= 0, batch.seeds, mix64(np.uint64(self.seed) ^ batch.seq_ids.astype(np.uint64)))
        key = np.where(batch.temperatures > 0, key, 0).astype(np.uint64)
        h = mix64(key ^ mix64(plan.positions[rows].astype(np.uint64) ^ mix64(input_ids[rows].astype(np.uint64))))
        tokens = (h % np.uint64(self.vocab_size - len(self.eos_token_ids))).astype(np.int64)
        for eos in self.eos_token_ids:  # skip over each EOS id (sorted), so none is drawn
            tokens += tokens >= eos
        if self.eos_rate > 0:
            coin = (mix64(h) >> np.uint64(11)).astype(np.float64) / 2.0**53  # uniform in [0, 1)
            tokens = np.where(coin < self.eos_rate, self.eos_token_ids[0], tokens)
        return tokens

    def shutdown(self) -> None:
        """Nothing to free; queued steps are left to end on the modelled clock."""


def make_simulated_executor(config: EngineConfig, spec: DecoderSpec, max_model_len: int, *,
                            timing: StepTimeModel | None = None, time_scale: float = 1.0,
                            eos_token_ids: tuple[int, ...] | None = None, eos_rate: float = 0.0) -> SimulatedExecutor:
    """A simulated H200 for ``config`` (pass it as ``LLMEngine(config, executor=...)``).

    KV pages: ``config.num_kvcache_blocks`` if set, else as many bfloat16 pages of
    ``spec``'s K/V as ``gpu_memory_utilization`` of an H200 holds after the non-KV
    memory the recorded profile reports, capped like the model runner's at every
    sequence at full length. ``timing`` defaults to the fitted H200 model
    (``h200_step_time.json``); it was fitted to Qwen3-0.6B and times any ``spec`` as if
    it were that model. ``eos_token_ids`` default to the checkpoint's (as the engine
    reads them), so no request ends on EOS unless ``eos_rate`` asks.

    Raises:
        ValueError: ``tensor_parallel_size > 1`` (the timing model is one card's), or
            bad ``time_scale`` / ``eos_rate``.
    """
    if config.tensor_parallel_size != 1:
        raise ValueError(f"tensor_parallel_size={config.tensor_parallel_size}: the simulated device models one "
                         "H200; use tensor_parallel_size=1.")
    num_blocks = config.num_kvcache_blocks
    if num_blocks is None:
        per_block = kv_cache_bytes_per_block(spec, config.kvcache_block_size, torch.bfloat16, spec.num_kv_heads)
        budget = (config.gpu_memory_utilization * H200_MEMORY_GIB - H200_NON_KV_GIB) * 2**30
        full = config.max_num_seqs * math.ceil(max_model_len / config.kvcache_block_size)
        num_blocks = min(int(budget // per_block), full)
        if num_blocks < 1:
            raise ValueError(f"gpu_memory_utilization={config.gpu_memory_utilization} leaves no KV cache on the "
                             "simulated H200; raise it.")
    if eos_token_ids is None:
        hf_config, tokenizer = load_hf_config(config.model), load_tokenizer(config.model)
        eos_token_ids = tuple(checkpoint_eos_ids(config.model, hf_config, tokenizer))
    return SimulatedExecutor(num_blocks, spec.vocab_size, timing or StepTimeModel.load(), SimulatedDevice(time_scale),
                             eos_token_ids, eos_rate, config.seed)
