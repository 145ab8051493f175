"""Prompt lookup: the longest recurring ending, its most recent occurrence, what followed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tutorial_engine.spec_decode import NgramProposer, SpeculativeConfig, propose_ngram


def reference_lookup(tokens: list[int], k: int, min_n: int, max_n: int) -> list[int]:
    """The definition, by brute force: n from longest to shortest, occurrences from the latest."""
    for n in range(min(max_n, len(tokens) - 1), min_n - 1, -1):
        suffix = tokens[len(tokens) - n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start:start + n] == suffix:
                return tokens[start + n: start + n + k]
    return []


@pytest.mark.parametrize("tokens, k, min_n, max_n, expected", [
    ([1, 2, 3, 4, 1, 2, 3, 9, 1, 2, 3], 3, 1, 4, [9, 1, 2]),  # the most recent of two occurrences
    ([7, 1, 2, 3, 4, 5, 8, 2, 3, 6, 2, 3], 2, 1, 4, [6, 2]),   # most recent "2 3"
    ([1, 2, 3, 5, 9, 9, 2, 3, 7, 1, 2, 3], 2, 1, 4, [5, 9]),   # the longer match "1 2 3" beats a later "2 3"
    ([1, 2, 3, 5, 9, 9, 2, 3, 7, 1, 2, 3], 2, 1, 2, [7, 1]),   # capped at 2: "2 3" most recent wins
    ([1, 2, 3, 4], 3, 1, 4, []),                               # nothing recurs
    ([4, 5, 6, 4], 3, 2, 4, []),                               # "4" recurs but is shorter than min
    ([4, 5, 6, 4], 3, 1, 4, [5, 6, 4]),                        # ... allowed with min 1
    ([5, 5, 5, 5], 3, 1, 4, [5]),                              # an overlapping match stops at the end
    ([3, 1, 3, 1, 3], 4, 1, 4, [1, 3]),
    ([1, 2, 1, 2, 1, 2], 1, 1, 4, [1]),                        # k caps the proposal
    ([9], 3, 1, 4, []),
    ([], 3, 1, 4, []),
])
def test_examples(tokens, k, min_n, max_n, expected):
    proposal = propose_ngram(tokens, k, min_n, max_n)
    assert proposal.dtype == np.int64
    assert proposal.tolist() == expected == reference_lookup(tokens, k, min_n, max_n)


@settings(max_examples=300, deadline=None)
@given(tokens=st.lists(st.integers(0, 3), max_size=40), k=st.integers(1, 6),
       bounds=st.tuples(st.integers(1, 5), st.integers(0, 3)))
def test_matches_the_brute_force_definition(tokens, k, bounds):
    min_n, max_n = bounds[0], bounds[0] + bounds[1]
    assert propose_ngram(tokens, k, min_n, max_n).tolist() == reference_lookup(tokens, k, min_n, max_n)


def test_accepts_numpy_and_does_not_alias_the_input():
    tokens = np.array([1, 2, 3, 1, 2], np.int32)
    proposal = propose_ngram(tokens, 2, 1, 3)
    proposal[0] = 99
    assert proposal.tolist() == [99, 1] and tokens.tolist() == [1, 2, 3, 1, 2]


def test_a_long_request():
    """100k tokens, one match at the very start (every pass scans everything): vectorized,
    this is milliseconds; speed itself is for benchmarks, not for a timed test."""
    tokens = np.arange(100_000)
    tokens[-4:] = tokens[:4]
    assert propose_ngram(tokens, 3, 1, 4).tolist() == [4, 5, 6]


def test_proposer_takes_its_settings_from_the_config_and_caps_k():
    proposer = NgramProposer(SpeculativeConfig.from_dict({"method": "ngram", "num_speculative_tokens": 3,
                                                          "prompt_lookup_min": 2, "prompt_lookup_max": 3}))
    tokens = [1, 2, 3, 4, 5, 6, 1, 2]
    assert proposer.propose(tokens).tolist() == [3, 4, 5]
    assert proposer.propose(tokens, max_proposals=1).tolist() == [3]
    assert proposer.propose([1, 2, 3, 1]).tolist() == []  # one-token match is below min 2
    with pytest.raises(ValueError, match="needs method='ngram'"):
        NgramProposer(SpeculativeConfig("draft_model", 2, model="."))
