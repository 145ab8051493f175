"""A verify step's logits rows and the computed tokens that survive it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tutorial_engine.spec_decode import num_computed_after_verify, verify_logits_indices


def test_each_speculating_row_scores_its_last_n_plus_one_inputs():
    # rows: a decode (1 token), a verify row of 1 + 3, a partial prefill chunk (5), a verify row of 1 + 1
    query_start_loc = np.array([0, 1, 5, 10, 12])
    indices = verify_logits_indices(query_start_loc, np.array([0, 3, 0, 1]), np.array([True, True, False, True]))
    assert indices.dtype == np.int64
    assert indices.tolist() == [0, 1, 2, 3, 4, 10, 11]


@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=8), data=st.data())
def test_without_proposals_it_is_the_plain_last_token_rows(lengths, data):
    samples = np.array(data.draw(st.lists(st.booleans(), min_size=len(lengths), max_size=len(lengths))))
    query_start_loc = np.concatenate(([0], np.cumsum(lengths)))
    plain = query_start_loc[1:][samples] - 1
    assert verify_logits_indices(query_start_loc, np.zeros(len(lengths), np.int64), samples).tolist() == plain.tolist()


@pytest.mark.parametrize("start, proposed, accepted, expected", [(10, 4, 0, 11), (10, 4, 2, 13), (10, 4, 4, 15)])
def test_computed_tokens_after_verify(start, proposed, accepted, expected):
    assert num_computed_after_verify(start, proposed, accepted) == expected


def test_impossible_acceptance_is_refused():
    with pytest.raises(ValueError, match=r"num_accepted=5 must be in \[0, num_draft_tokens=4\]"):
        num_computed_after_verify(10, 4, 5)
