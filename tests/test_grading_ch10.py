"""Chapter 10's graded tasks, both ways, and the references against the engine's own code."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tutorial_engine import SamplingParams
from tutorial_engine.book.grading import ch10
from tutorial_engine.sampler import Sampler, SamplingBatch
from tutorial_engine.spec_decode import RejectionSampler, expected_accepted_length
from tutorial_engine.spec_decode.rejection import acceptance_mask, residual_probs

from grading_both_ways import assert_graded_both_ways


def _k_not_k_plus_1(alpha, k):  # forgets the target's own token
    return 1.0 * k if alpha == 1 else (1 - alpha ** k) / (1 - alpha)


def _linear(alpha, k):  # every proposal tested, as if a rejection did not stop the row
    return 1 + alpha * k


def _prefix_without_target_token(proposals, target_argmax):
    return ch10.greedy_verify(proposals, target_argmax)[:-1]


def _emit_the_rejected_proposal(proposals, target_argmax):
    emitted = ch10.greedy_verify(proposals, target_argmax)
    accepted = len(emitted) - 1
    return emitted if accepted == len(proposals) else emitted[:-1] + [proposals[accepted]]


def _every_match_not_the_prefix(proposals, target_argmax):
    return [x for x, t in zip(proposals, target_argmax) if x == t] + [target_argmax[-1]]


def _ignore_q(p, q, proposal, u):
    return u < p[proposal]


def _inverted_ratio(p, q, proposal, u):
    return u < q[proposal] / p[proposal]


def _deterministic(p, q, proposal, u):
    return p[proposal] >= q[proposal]


def _p_itself(p, q):
    return list(p)


def _unnormalized(p, q):
    return [max(0.0, a - b) for a, b in zip(p, q)]


def _absolute_difference(p, q):
    diff = [abs(a - b) for a, b in zip(p, q)]
    return [d / sum(diff) for d in diff] if sum(diff) else list(p)


WRONG = {
    "ch10.tokens_per_step": [_k_not_k_plus_1, _linear],
    "ch10.greedy": [_prefix_without_target_token, _emit_the_rejected_proposal, _every_match_not_the_prefix],
    "ch10.accept": [_ignore_q, _inverted_ratio, _deterministic],
    "ch10.residual": [_p_itself, _unnormalized, _absolute_difference],
}


def test_every_task_has_known_wrong_answers():
    assert {task.name for task in ch10.TASKS} == set(WRONG)


@pytest.mark.parametrize("task", ch10.TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


def test_tokens_per_step_is_the_engines_formula():
    rng = random.Random(1)
    for _ in range(50):
        alpha, k = rng.random(), rng.randint(0, 12)
        assert ch10.tokens_per_verify_step(alpha, k) == pytest.approx(expected_accepted_length(alpha, k))


def test_greedy_reference_matches_the_rejection_sampler():
    rng = random.Random(2)
    for _ in range(50):
        case = ch10._greedy_case(rng)
        k = len(case["proposals"])
        logits = torch.nn.functional.one_hot(torch.tensor(case["target_argmax"]), 6).float() * 5
        out = RejectionSampler(Sampler(torch.device("cpu"), 0))(
            logits, np.array([k]), torch.tensor(case["proposals"]),
            SamplingBatch.from_params([0], [SamplingParams(temperature=0)]))
        assert out.emitted() == [ch10.greedy_verify(**case)]


def test_sampling_references_match_the_engines_pieces():
    rng = random.Random(3)
    for _ in range(50):
        case = ch10._accept_case(rng)
        p, q, x = torch.tensor(case["p"]), torch.tensor(case["q"]), case["proposal"]
        engine = acceptance_mask(torch.tensor([[case["u"]]]), p[x].view(1, 1), q[x].view(1, 1)).item()
        assert engine == ch10.accept_proposal(**case)
        engine_residual = residual_probs(p[None], q[None])[0]
        assert torch.allclose(engine_residual / engine_residual.sum(),
                              torch.tensor(ch10.residual_distribution(case["p"], case["q"])), atol=1e-6)
