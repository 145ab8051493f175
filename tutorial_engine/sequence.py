"""One request as the engine tracks it (vLLM's ``Request`` / nano-vLLM's ``Sequence``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

from .in_flight import InFlight
from .sampling_params import SamplingParams
from .spec_decode.metrics import SpecDecodeStats

FinishReason = Literal["stop", "length", "abort"]


class SequenceStatus(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Sequence:
    """A request's tokens and progress.

    ``token_ids`` is prompt + generated tokens. ``num_computed_tokens`` counts the
    leading tokens whose K/V already sit in the paged cache, or will once the steps
    launched so far have run; each step schedules some of the rest (a whole prompt, a
    prefill chunk, or one decode token). Preemption by recompute resets it to 0 and
    frees the pages; the tokens themselves are kept.

    With overlap scheduling a step is planned before the previous step's token reaches
    the CPU: ``in_flight`` holds the tokens sampled by launched steps that have not
    arrived yet, and the row of the sampled-token tensor the next step reads its input
    from (see ``in_flight.py``). Nothing is in flight in the plain loop.
    """

    seq_id: int
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    token_ids: list[int] = field(init=False)
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    num_cached_tokens: int = 0  # prompt tokens served by the prefix cache at first admission
    num_preemptions: int = 0
    in_flight: InFlight = field(default_factory=InFlight)
    spec_decode_stats: SpecDecodeStats = field(default_factory=SpecDecodeStats)  # its verify rows (chapter 10)
    finish_reason: FinishReason | None = None
    arrival_time: float = field(default_factory=time.perf_counter)
    first_token_time: float | None = None
    token_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return self.num_tokens - self.num_prompt_tokens

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens + self.in_flight.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED
