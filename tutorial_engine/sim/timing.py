"""How long one engine step takes on the card the book measured: a linear model
fitted to the per-step times the headline benchmark recorded on an NVIDIA H200.

The model (seconds)::

    t = overhead_s
        + per_seq_s * num_seqs                     # each sequence in the step
        + per_prefill_token_s * prefill_tokens     # new tokens beyond one per sequence
        + per_context_token_s * context_tokens     # K/V read by attention: sum of context lengths

A decode step (one new token per sequence) costs ``overhead + per_seq * B +
per_context_token * sum(seq_lens)``; a prefill chunk of ``n`` tokens adds
``per_prefill_token * (n - 1)``, so ``1 / per_prefill_token_s`` is the prefill
throughput in tokens/s.

Source: ``book/data/bench_vs_nanovllm_h200.json``, the run of our engine in the
nano-vLLM comparison (``comparison.ours_detail.engine.step_series``): Qwen3-0.6B
shapes in bfloat16, FlashAttention, CUDA graphs, overlap scheduling, on an NVIDIA
H200. That file records each engine call's batch size, prefill tokens and wall time
but not context lengths, so :func:`replay_features` replays the same workload through
this engine's scheduler with the same settings (the schedule is deterministic: every
request runs to its ``max_tokens``), checks that the replay's batch sizes and prefill
tokens equal the recorded ones call for call, and takes the context lengths from it.

Which wall time belongs to which step (:func:`fit`):

* decode steps: the overlapped loop's call ``i + 1`` launches step ``i + 1`` and then
  waits for step ``i``, so when the device is the bottleneck (it was 92% busy in
  ``overlap_scheduling_h200.json``) that call's wall time is step ``i``'s device time.
  Fitted by least squares over decode steps whose neighbours are decode steps too.
* prefill-carrying steps: launching an eager prefill forward fills the CUDA launch
  queue, so the host blocks in the launching call itself (call 0, which waits for
  nothing, took 48 ms): call ``i``'s wall time is step ``i``'s time. Their cost beyond
  the decode model, divided by their prefill tokens (least squares), is
  ``per_prefill_token_s``.

The modelled device time thus includes the few percent of host gaps the real run had.

Refit (rewrites ``h200_step_time.json`` beside this file; about a CPU second)::

    python -m tutorial_engine.sim.fit --write
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..step_plan import StepPlan

FIT_PATH = Path(__file__).with_name("h200_step_time.json")
SOURCE = "book/data/bench_vs_nanovllm_h200.json"
REFIT_COMMAND = "python -m tutorial_engine.sim.fit --write"
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class StepFeatures:
    """What a step's time depends on: ``num_seqs`` sequences with ``num_tokens`` new
    tokens in all, over ``context_tokens`` tokens of context (the sum of their lengths
    after the step)."""

    num_seqs: int
    num_tokens: int
    context_tokens: int

    @property
    def prefill_tokens(self) -> int:
        """New tokens beyond one per sequence (prompt chunks)."""
        return self.num_tokens - self.num_seqs

    @property
    def is_decode(self) -> bool:
        return self.num_tokens == self.num_seqs

    @classmethod
    def of_plan(cls, plan: StepPlan) -> StepFeatures:
        return cls(plan.num_seqs, plan.num_tokens, int(plan.seq_lens.sum()))


@dataclass(frozen=True)
class StepTimeModel:
    """A fitted step-time model (see the module docstring); coefficients in seconds.

    Attributes:
        overhead_s: fixed cost of a step (s).
        per_seq_s: cost of each sequence in the step (s).
        per_prefill_token_s: cost of each new token beyond a sequence's first (s);
            its inverse is the prefill throughput.
        per_context_token_s: cost of each token of context the attention reads (s).
        source: the measurement file the coefficients were fitted to.
        card: the GPU that measured it.
        command: the command that refits them.
        decode_error, prefill_error: relative error ``|predicted - recorded| / recorded``
            of the fit on the recorded decode and prefill-carrying steps it used:
            ``{"steps", "median", "p90", "p99", "max"}``.
    """

    overhead_s: float
    per_seq_s: float
    per_prefill_token_s: float
    per_context_token_s: float
    source: str = SOURCE
    card: str = "NVIDIA H200"
    command: str = REFIT_COMMAND
    decode_error: dict | None = None
    prefill_error: dict | None = None

    def step_time(self, features: StepFeatures) -> float:
        """Modelled device time of one step, in seconds."""
        return (self.overhead_s + self.per_seq_s * features.num_seqs
                + self.per_prefill_token_s * features.prefill_tokens
                + self.per_context_token_s * features.context_tokens)

    def plan_time(self, plan: StepPlan) -> float:
        return self.step_time(StepFeatures.of_plan(plan))

    @property
    def prefill_tok_s(self) -> float:
        """Prefill throughput the model implies (tokens/s)."""
        return 1.0 / self.per_prefill_token_s

    @classmethod
    def load(cls, path: str | Path = FIT_PATH) -> StepTimeModel:
        return cls(**json.loads(Path(path).read_text()))

    def save(self, path: str | Path = FIT_PATH) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")


def fit(features: list[StepFeatures], wall_s: list[float]) -> StepTimeModel:
    """Least-squares fit of the model to an overlapped run's per-call wall times
    (``wall_s`` has one entry more than ``features``: the last call only waits).
    Pairs steps with calls as the module docstring explains.

    Raises:
        ValueError: the lengths do not match, or the run lacks decode or prefill steps.
    """
    if len(wall_s) != len(features) + 1:
        raise ValueError(f"{len(features)} steps need {len(features) + 1} call times, got {len(wall_s)}")
    n = len(features)
    decode = [i for i in range(n) if all(features[j].is_decode for j in range(max(i - 1, 0), min(i + 2, n)))]
    prefill = [i for i in range(n) if not features[i].is_decode]
    if len(decode) < 3 or not prefill:
        raise ValueError(f"the run has {len(decode)} usable decode steps and {len(prefill)} prefill steps; "
                         "the fit needs at least 3 and 1.")
    x = np.array([[1.0, features[i].num_seqs, features[i].context_tokens] for i in decode])
    y = np.array([wall_s[i + 1] for i in decode])
    (overhead, per_seq, per_context), *_ = np.linalg.lstsq(x, y, rcond=None)
    decode_model = StepTimeModel(overhead, per_seq, 0.0, per_context)
    extra = np.array([wall_s[i] - decode_model.step_time(features[i]) for i in prefill])
    tokens = np.array([features[i].prefill_tokens for i in prefill], float)
    per_prefill = float(tokens @ extra / (tokens @ tokens))
    model = StepTimeModel(float(overhead), float(per_seq), per_prefill, float(per_context))
    errors = {name: _relative_error([model.step_time(features[i]) for i in steps], recorded)
              for name, steps, recorded in (("decode_error", decode, y), ("prefill_error", prefill,
                                                                           [wall_s[i] for i in prefill]))}
    return StepTimeModel(model.overhead_s, model.per_seq_s, model.per_prefill_token_s, model.per_context_token_s,
                         **errors)


def _relative_error(predicted, recorded) -> dict:
    error = np.abs(np.asarray(predicted) - np.asarray(recorded)) / np.asarray(recorded)
    return {"steps": len(error), **{name: round(float(q), 4) for name, q in
                                    (("median", np.median(error)), ("p90", np.percentile(error, 90)),
                                     ("p99", np.percentile(error, 99)), ("max", error.max()))}}


# A device that takes no time: the replay needs the schedule, not the clock.
ZERO_TIME = StepTimeModel(0.0, 0.0, 0.0, 0.0, source="none: every step takes no time", card="none")
