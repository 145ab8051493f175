"""How well speculation pays: proposals, acceptances, and what theory expects.

The counters carry vLLM's names (``spec_decode_num_drafts``,
``spec_decode_num_draft_tokens``, ``spec_decode_num_accepted_tokens``,
``spec_decode_num_accepted_tokens_per_pos``), per request and engine-wide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class SpecDecodeStats:
    """Counts over verify rows (one sequence in one verify step is one *draft*).

    Attributes:
        num_drafts: verify rows that carried at least one proposal.
        num_draft_tokens: tokens proposed in them.
        num_accepted_tokens: proposals the target accepted.
        num_accepted_tokens_per_pos: ``[i]`` counts drafts whose proposal ``i`` was
            accepted (so it falls with ``i``: a proposal counts only after all before it).
    """

    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    num_accepted_tokens_per_pos: list[int] = field(default_factory=list)

    def record(self, num_draft_tokens: int, num_accepted: int) -> None:
        """One verify row: ``num_draft_tokens`` proposed, the first ``num_accepted`` kept.
        A row with no proposal (nothing matched) is plain decoding and is not counted."""
        if not 0 <= num_accepted <= num_draft_tokens:
            raise ValueError(f"num_accepted={num_accepted} must be in [0, num_draft_tokens={num_draft_tokens}].")
        if num_draft_tokens == 0:
            return
        self.num_drafts += 1
        self.num_draft_tokens += num_draft_tokens
        self.num_accepted_tokens += num_accepted
        self._grow_positions(num_draft_tokens)
        for position in range(num_accepted):
            self.num_accepted_tokens_per_pos[position] += 1

    def merge(self, other: SpecDecodeStats) -> None:
        """Add ``other``'s counts (a request's into the engine's totals)."""
        self.num_drafts += other.num_drafts
        self.num_draft_tokens += other.num_draft_tokens
        self.num_accepted_tokens += other.num_accepted_tokens
        self._grow_positions(len(other.num_accepted_tokens_per_pos))
        for position, count in enumerate(other.num_accepted_tokens_per_pos):
            self.num_accepted_tokens_per_pos[position] += count

    def _grow_positions(self, length: int) -> None:
        """One per-position counter for each proposal position seen so far."""
        self.num_accepted_tokens_per_pos.extend([0] * (length - len(self.num_accepted_tokens_per_pos)))

    @property
    def acceptance_rate(self) -> float:
        """Accepted / proposed tokens (NaN before any proposal). Note this is not the
        per-token ``alpha`` of :func:`expected_accepted_length`: a proposal after a
        rejection is never tested, so it counts here as not accepted."""
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else math.nan

    @property
    def mean_accepted_length(self) -> float:
        """Tokens emitted per verify row, the target's own token included:
        ``1 + accepted / drafts`` (vLLM's "mean acceptance length"; NaN before any)."""
        return 1 + self.num_accepted_tokens / self.num_drafts if self.num_drafts else math.nan

    def as_dict(self) -> dict:
        """vLLM's metric names, plus the two rates."""
        return {
            "spec_decode_num_drafts": self.num_drafts,
            "spec_decode_num_draft_tokens": self.num_draft_tokens,
            "spec_decode_num_accepted_tokens": self.num_accepted_tokens,
            "spec_decode_num_accepted_tokens_per_pos": list(self.num_accepted_tokens_per_pos),
            "spec_decode_acceptance_rate": self.acceptance_rate,
            "spec_decode_mean_accepted_length": self.mean_accepted_length,
        }


def expected_accepted_length(alpha: float, k: int) -> float:
    """Expected tokens emitted per verify step with ``k`` proposals when each is
    accepted independently with probability ``alpha``, bonus token included:
    ``sum_{i=0..k} alpha^i = (1 - alpha^(k+1)) / (1 - alpha)`` (Leviathan et al., 2023,
    §3.1); ``k + 1`` at ``alpha = 1``, 1 at ``alpha = 0``.

    Raises:
        ValueError: ``alpha`` outside [0, 1] or ``k`` < 0.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha} must be a probability in [0, 1].")
    if k < 0:
        raise ValueError(f"k={k} must be >= 0 (proposals per step).")
    if alpha == 1:
        return float(k + 1)
    return (1 - alpha ** (k + 1)) / (1 - alpha)
