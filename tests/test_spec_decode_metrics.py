"""Speculation counters (vLLM's names) and the expected accepted length."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tutorial_engine.spec_decode import SpecDecodeStats, expected_accepted_length


def test_counters_rates_and_vllm_names():
    stats = SpecDecodeStats()
    assert math.isnan(stats.acceptance_rate) and math.isnan(stats.mean_accepted_length)
    for proposed, accepted in [(4, 4), (4, 1), (2, 0), (0, 0)]:  # the last: nothing matched, plain decode
        stats.record(proposed, accepted)
    assert stats.as_dict() == {
        "spec_decode_num_drafts": 3,
        "spec_decode_num_draft_tokens": 10,
        "spec_decode_num_accepted_tokens": 5,
        "spec_decode_num_accepted_tokens_per_pos": [2, 1, 1, 1],
        "spec_decode_acceptance_rate": 0.5,
        "spec_decode_mean_accepted_length": pytest.approx(1 + 5 / 3),
    }


def test_merge_adds_a_requests_counts():
    total, request = SpecDecodeStats(), SpecDecodeStats()
    total.record(2, 1)
    request.record(3, 3)
    total.merge(request)
    assert (total.num_drafts, total.num_draft_tokens, total.num_accepted_tokens) == (2, 5, 4)
    assert total.num_accepted_tokens_per_pos == [2, 1, 1]


def test_impossible_counts_are_refused():
    with pytest.raises(ValueError, match=r"num_accepted=3 must be in \[0, num_draft_tokens=2\]"):
        SpecDecodeStats().record(2, 3)


@pytest.mark.parametrize("alpha, k, expected", [(1.0, 4, 5.0), (0.0, 4, 1.0), (0.5, 2, 1.75), (0.8, 0, 1.0)])
def test_expected_accepted_length(alpha, k, expected):
    assert expected_accepted_length(alpha, k) == pytest.approx(expected)


@given(alpha=st.floats(0, 1), k=st.integers(0, 12))
def test_expected_accepted_length_is_the_geometric_sum(alpha, k):
    value = expected_accepted_length(alpha, k)
    assert value == pytest.approx(sum(alpha ** i for i in range(k + 1)))
    assert 1 <= value <= k + 1 + 1e-9


@pytest.mark.parametrize("alpha, k, message", [(1.5, 2, r"alpha=1.5 must be a probability"),
                                                (0.5, -1, r"k=-1 must be >= 0")])
def test_expected_accepted_length_refuses_nonsense(alpha, k, message):
    with pytest.raises(ValueError, match=message):
        expected_accepted_length(alpha, k)
