"""N-gram prompt lookup: propose the tokens that followed the last time the text's
ending appeared earlier in the same request.

Generated text often repeats its prompt (code edits, summaries, quotations), so the
cheapest draft model is no model at all: take the last ``n`` tokens, find their most
recent earlier occurrence in prompt + output, and propose what came after it
(Saxena, "Prompt Lookup Decoding", 2023; vLLM's ``ngram`` method). Longer matches are
tried first (``n`` from ``prompt_lookup_max`` down to ``prompt_lookup_min``), since a
longer shared context predicts the continuation better.

The proposal carries no probabilities: for verification it is a point mass on each
proposed token (:mod:`tutorial_engine.spec_decode.rejection`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import SpeculativeConfig


def propose_ngram(token_ids: Sequence[int] | np.ndarray, num_speculative_tokens: int,
                  prompt_lookup_min: int, prompt_lookup_max: int) -> np.ndarray:
    """Up to ``num_speculative_tokens`` proposed next tokens for one request.

    Finds the longest ``n`` in ``[prompt_lookup_min, prompt_lookup_max]`` whose last-``n``
    tokens occur earlier in ``token_ids`` and, among those occurrences, the most recent
    one; proposes the tokens that followed it. The match may overlap the ending
    itself, so a repeating pattern (``a b a b a``) proposes its own continuation.

    Cost: ``O(len(token_ids) * prompt_lookup_max)`` in vectorized numpy, one pass per
    suffix length, stopping early when no candidate is left.

    Args:
        token_ids: the request's prompt + output token ids so far.
    Returns:
        int64 ``[m]``, ``0 <= m <= num_speculative_tokens``; empty when no n-gram of at
        least ``prompt_lookup_min`` tokens recurs (the step then decodes normally).
    """
    tokens = np.asarray(token_ids, dtype=np.int64)
    num = len(tokens)
    if num_speculative_tokens < 1 or num < prompt_lookup_min + 1:
        return np.empty(0, np.int64)
    # A candidate is an end position e < num - 1 (something follows it). After j
    # passes, match_len[e] counts how many of tokens[e], tokens[e-1], ... equal the
    # ending's tokens[num-1], tokens[num-2], ... without a break (capped at j).
    match_len = np.zeros(num - 1, np.int64)
    still_matching = np.ones(num - 1, bool)
    for j in range(min(prompt_lookup_max, num - 1)):
        still_matching[:j] = False  # ends too close to the start to match j + 1 tokens
        still_matching[j:] &= tokens[: num - 1 - j] == tokens[num - 1 - j]
        if not still_matching.any():
            break
        match_len += still_matching
    best = int(match_len.max())
    if best < prompt_lookup_min:
        return np.empty(0, np.int64)
    end = int(np.flatnonzero(match_len == best)[-1])  # the most recent of the longest
    return tokens[end + 1: end + 1 + num_speculative_tokens].copy()


class NgramProposer:
    """Prompt lookup for a batch of requests, with the settings of a
    :class:`~tutorial_engine.spec_decode.config.SpeculativeConfig`."""

    def __init__(self, config: SpeculativeConfig) -> None:
        if config.method != "ngram":
            raise ValueError(f"NgramProposer needs method='ngram', got {config.method!r}.")
        self.k = config.num_speculative_tokens
        self.min_n = config.prompt_lookup_min
        self.max_n = config.prompt_lookup_max

    def propose(self, token_ids: Sequence[int] | np.ndarray, max_proposals: int | None = None) -> np.ndarray:
        """Proposals for one request (see :func:`propose_ngram`); ``max_proposals`` caps
        ``k`` near the request's end (its ``max_tokens`` or ``max_model_len``), where a
        verify step must not emit more tokens than the request may still take."""
        k = self.k if max_proposals is None else min(self.k, max_proposals)
        return propose_ngram(token_ids, k, self.min_n, self.max_n)
