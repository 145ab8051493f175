"""A verify step in the step plan's terms: which logits rows to score, and how many
computed tokens survive.

A sequence that speculates runs as a short *extend* row: its input is its last known
token followed by its ``n`` proposals, ``n + 1`` new tokens at the positions after
its computed ones, batched with ordinary decode rows (``n = 0``) and prefill chunks in
the same varlen layout. Where a plain step samples one logits row per sequence (the
last input token's), a verify step scores all ``n + 1``: the target's distribution
after the last token and after each proposal.

After verification the K/V of the ``n - a`` rejected proposals sit in the cache at
the row's last positions: the sequence keeps ``start + 1 + a`` computed tokens (its
last known token and the ``a`` accepted ones); the emitted final token has no K/V yet
(it is the next step's input). Rolling back is only lowering that count: stale
slots are overwritten by the next step, and no attention reads past a sequence's
length. Pages left wholly beyond the new length can be freed, and a page holding a
rejected token's K/V must not reach the prefix cache before it is overwritten.
"""

from __future__ import annotations

import numpy as np


def verify_logits_indices(query_start_loc: np.ndarray, num_draft_tokens: np.ndarray,
                          samples: np.ndarray) -> np.ndarray:
    """The input rows whose logits a step samples, each speculating row's last ``n_b + 1``.

    Args:
        query_start_loc: int ``[B + 1]``, prefix sums of the rows' new-token counts.
        num_draft_tokens: int ``[B]``, proposals at the end of each row's input (0 for
            rows that do not speculate).
        samples: bool ``[B]``, rows that sample (a partial prefill chunk does not).
    Returns:
        int64 ``[sum over sampling rows of (n_b + 1)]``, in row order; with no proposals
        this is the plain step's ``query_start_loc[1:][samples] - 1``.
    """
    ends = np.asarray(query_start_loc, np.int64)[1:][samples]
    counts = np.asarray(num_draft_tokens, np.int64)[samples] + 1
    # For each row: ends - counts, ..., ends - 1.
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(ends - counts, counts) + offsets


def num_computed_after_verify(start: int, num_draft_tokens: int, num_accepted: int) -> int:
    """Tokens of a sequence whose K/V stay valid after verifying a row that began at
    position ``start`` (its last known token) with ``num_draft_tokens`` proposals,
    ``num_accepted`` of them accepted.

    Raises:
        ValueError: ``num_accepted`` outside ``[0, num_draft_tokens]``.
    """
    if not 0 <= num_accepted <= num_draft_tokens:
        raise ValueError(f"num_accepted={num_accepted} must be in [0, num_draft_tokens={num_draft_tokens}].")
    return start + 1 + num_accepted

