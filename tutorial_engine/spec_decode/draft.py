"""Draft-model proposals: a smaller model with the target's tokenizer guesses the next
``k`` tokens greedily (Leviathan et al., 2023; Chen et al., 2023).

The draft runs in an engine of its own (its own paged KV cache, with a radix prefix
cache so each call computes only the tokens added since the last one, plus at most a
page). Each speculating row asks it in turn, from the scheduler, on the CPU side of
the step: simple and exact, not fast. Its proposals are greedy, hence point masses,
which the rejection sampler verifies exactly for any temperature (a sampled draft
with its ``q`` would be accepted more often at temperature > 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..sampling_params import SamplingParams
from .config import SpeculativeConfig


class DraftEngine(Protocol):
    """What the proposer needs of the draft's :class:`~tutorial_engine.engine.LLMEngine`."""

    max_model_len: int

    def make_sequence(self, prompt: list[int], params: SamplingParams): ...

    def add_sequence(self, seq) -> None: ...

    def has_unfinished(self) -> bool: ...

    def step(self) -> list: ...


class DraftModelProposer:
    """Greedy proposals from a draft model's engine, up to ``num_speculative_tokens``."""

    def __init__(self, config: SpeculativeConfig, engine: DraftEngine) -> None:
        if config.method != "draft_model":
            raise ValueError(f"DraftModelProposer needs method='draft_model', got {config.method!r}.")
        self.k = config.num_speculative_tokens
        self.engine = engine

    def propose(self, token_ids: Sequence[int], max_proposals: int | None = None) -> np.ndarray:
        """The draft's greedy continuation of ``token_ids``: int64 ``[min(k, max_proposals)]``."""
        k = self.k if max_proposals is None else min(self.k, max_proposals)
        k = min(k, self.engine.max_model_len - len(token_ids))  # the draft may be shorter-lived than the target
        if k < 1:
            return np.empty(0, np.int64)
        seq = self.engine.make_sequence(list(token_ids), SamplingParams(temperature=0, max_tokens=k, ignore_eos=True))
        self.engine.add_sequence(seq)
        while self.engine.has_unfinished():
            self.engine.step()
        return np.asarray(seq.output_token_ids, np.int64)
