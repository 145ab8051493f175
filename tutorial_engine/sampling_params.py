"""Per-request sampling settings, named as in vLLM's ``SamplingParams``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """How to pick each next token of one request, and when to stop.

    Args:
        temperature: softmax temperature; ``0`` means greedy (argmax). Must be >= 0.
        top_p: nucleus sampling: keep the smallest set of tokens whose probability
            mass reaches ``top_p`` (Holtzman et al., 2020). In (0, 1].
        top_k: keep only the ``top_k`` most likely tokens; ``-1`` (or 0) keeps all.
        max_tokens: maximum number of generated tokens (>= 1).
        ignore_eos: keep generating past the end-of-sequence token (benchmarks).
        stop_token_ids: extra token ids that end generation (the token is kept).
        seed: per-request random seed; the same seed gives the same tokens whatever
            else is in the batch.

    Raises:
        ValueError: on any value outside its range, naming the field and the fix.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    ignore_eos: bool = False
    stop_token_ids: list[int] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(
                f"temperature={self.temperature} is negative; use 0 for greedy decoding "
                "or a positive value to sample."
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} is outside (0, 1]; use 1.0 to disable nucleus sampling.")
        if self.top_k < -1:
            raise ValueError(f"top_k={self.top_k} is invalid; use -1 (or 0) to keep all tokens, or a positive k.")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens={self.max_tokens} must be at least 1.")
        self.stop_token_ids = list(self.stop_token_ids)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
