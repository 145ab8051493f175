"""The acceptance rule: greedy cases, the target distribution exactly (and a wrong rule
caught by the same test), seeded reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tutorial_engine import SamplingParams
from tutorial_engine.sampler import Sampler, SamplingBatch
from tutorial_engine.spec_decode import RejectionSampler, SpecDecodeStats, expected_accepted_length, rejection

CPU = torch.device("cpu")


def batch_of(params: list[SamplingParams]) -> SamplingBatch:
    return SamplingBatch.from_params(list(range(len(params))), params)


def verify(logits_rows, drafts_per_row, params, draft_probs=None, seed=0):
    """Run the rejection sampler on per-row lists: logits ``[n_b + 1, V]`` and proposals ``[n_b]``."""
    n = np.array([len(d) for d in drafts_per_row], np.int64)
    logits = torch.cat(logits_rows)
    drafts = torch.tensor([t for d in drafts_per_row for t in d], dtype=torch.long)
    return RejectionSampler(Sampler(CPU, seed))(logits, n, drafts, batch_of(params), draft_probs)


# -- greedy ------------------------------------------------------------------------------

def one_hot_logits(argmaxes: list[int], vocab: int = 8) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(argmaxes), vocab).float() * 5


@pytest.mark.parametrize("target, drafts, emitted", [
    ([3, 1, 4, 1], [3, 1, 4], [3, 1, 4, 1]),  # all accepted, then the bonus token
    ([3, 1, 4, 1], [3, 2, 4], [3, 1]),        # mismatch at 1: the target's token there, the rest dropped
    ([3, 1, 4, 1], [0, 1, 4], [3]),           # mismatch at 0: one token, as plain decoding
    ([6], [], [6]),                           # no proposal: plain greedy decoding
])
def test_greedy_keeps_the_agreeing_prefix_and_one_target_token(target, drafts, emitted):
    out = verify([one_hot_logits(target)], [drafts], [SamplingParams(temperature=0)])
    assert out.emitted() == [emitted]
    assert out.num_accepted.tolist() == [len(emitted) - 1]


def test_greedy_rows_of_different_lengths_in_one_batch():
    rows = [([3, 1, 4, 1], [3, 1, 4]), ([2, 2], [5]), ([7], []), ([0, 5, 6], [0, 5])]
    out = verify([one_hot_logits(t) for t, _ in rows], [d for _, d in rows], [SamplingParams(temperature=0)] * 4)
    assert out.emitted() == [[3, 1, 4, 1], [2], [7], [0, 5, 6]]
    assert out.token_ids.shape == (4, 4) and out.token_ids[1].tolist() == [2, -1, -1, -1]


def test_top_k_1_is_greedy_and_a_random_row_mixes_with_greedy_rows():
    target, drafts = [3, 1, 4, 1], [3, 2, 4]
    out = verify([one_hot_logits(target)] * 2, [drafts] * 2,
                 [SamplingParams(temperature=0), SamplingParams(temperature=0.8, top_k=1)])
    assert out.emitted() == [[3, 1], [3, 1]]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_batches_keep_the_invariants(data):
    """Any mix of rows: the emitted tokens start with the accepted proposals, number
    between 1 and n + 1, lie in the vocabulary; greedy rows follow the greedy reference."""
    vocab = 5
    lengths = data.draw(st.lists(st.integers(0, 4), min_size=1, max_size=6))
    temps = data.draw(st.lists(st.sampled_from([0.0, 0.7, 1.3]), min_size=len(lengths), max_size=len(lengths)))
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16)))
    logits = [torch.randn(n + 1, vocab, generator=generator) for n in lengths]
    drafts = [torch.randint(0, vocab, (n,), generator=generator).tolist() for n in lengths]
    with_q = data.draw(st.booleans())
    q = torch.softmax(torch.randn(sum(lengths), vocab, generator=generator), -1) if with_q else None
    out = verify(logits, drafts, [SamplingParams(temperature=t) for t in temps], q)
    for row, (n, draft, emitted, t) in enumerate(zip(lengths, drafts, out.emitted(), temps)):
        accepted = len(emitted) - 1
        assert 0 <= accepted <= n and emitted[:accepted] == draft[:accepted]
        assert all(0 <= token < vocab for token in emitted)
        if t == 0:
            argmax = logits[row].argmax(-1).tolist()
            expected = next((i for i in range(n) if draft[i] != argmax[i]), n)
            assert emitted == draft[:expected] + [argmax[expected]]


# -- the distribution ----------------------------------------------------------------

VOCAB = 6
P = torch.tensor([[0.35, 0.05, 0.20, 0.10, 0.25, 0.05],   # target, at positions 0, 1, 2 (bonus)
                  [0.10, 0.30, 0.05, 0.25, 0.10, 0.20],
                  [0.20, 0.20, 0.20, 0.10, 0.10, 0.20]])
Q = torch.tensor([[0.05, 0.40, 0.10, 0.30, 0.05, 0.10],   # draft, at positions 0, 1
                  [0.30, 0.10, 0.20, 0.10, 0.20, 0.10]])
TRIALS = 20_000


def emitted_tokens(draft_probs: torch.Tensor | None) -> list[list[int]]:
    """``TRIALS`` independent verify rows of 2 proposals each, drawn from ``Q`` (or, with
    ``draft_probs=None``, the fixed point-mass proposal 0, 1 as prompt lookup makes)."""
    generator = torch.Generator().manual_seed(1)
    if draft_probs is None:
        drafts = torch.tensor([0, 1]).repeat(TRIALS, 1)
    else:
        drafts = torch.stack([torch.multinomial(Q[i], TRIALS, replacement=True, generator=generator)
                              for i in range(2)], dim=1)
    logits = P.log().repeat(TRIALS, 1)  # rows consecutive: positions 0, 1, 2 of trial 0, then trial 1, ...
    q = draft_probs.repeat(TRIALS, 1) if draft_probs is not None else None
    sampler = RejectionSampler(Sampler(CPU, seed=0))
    out = sampler(logits, np.full(TRIALS, 2), drafts.flatten(), batch_of([SamplingParams(temperature=1.0)] * TRIALS), q)
    return out.emitted()


def chi_square_p_value(tokens: list[int], expected: torch.Tensor) -> float:
    """Pearson's chi-square test of ``tokens`` against the distribution ``expected``."""
    observed = torch.bincount(torch.tensor(tokens), minlength=VOCAB).double()
    counts = expected.double() * observed.sum()
    statistic = ((observed - counts) ** 2 / counts).sum()
    return torch.special.gammaincc(torch.tensor((VOCAB - 1) / 2, dtype=torch.double), statistic / 2).item()


def follows_target(emitted: list[list[int]]) -> bool:
    """Each position's tokens, over the rows that reached it, must follow the target's
    distribution there: ``P[0]``, ``P[1]``, and ``P[2]`` for the bonus token (here ``P``
    does not depend on earlier tokens, so position i is ``P[i]`` whatever came before).
    A correct rule fails this at rate 3e-4 (three tests at 1e-4); the wrong rules below
    give p-values under 1e-90."""
    return all(chi_square_p_value([row[i] for row in emitted if len(row) > i], P[i]) > 1e-4 for i in range(3))


@pytest.mark.parametrize("draft_probs", [Q, None], ids=["draft-model", "point-mass"])
def test_emitted_tokens_follow_the_target_distribution(draft_probs):
    emitted = emitted_tokens(draft_probs)
    assert follows_target(emitted)
    lengths = torch.tensor([len(row) for row in emitted])
    assert set(lengths.tolist()) == {1, 2, 3}  # rejections at 0, at 1, and bonus tokens all happened


@pytest.mark.parametrize("wrong_rule", [
    pytest.param(lambda uniforms, p, q: torch.ones_like(uniforms, dtype=torch.bool), id="always-accept"),
    pytest.param(lambda uniforms, p, q: uniforms < p, id="ignore-q"),
])
def test_the_same_test_catches_a_wrong_acceptance_test(monkeypatch, wrong_rule):
    monkeypatch.setattr(rejection, "acceptance_mask", wrong_rule)
    assert not follows_target(emitted_tokens(Q))


def test_the_same_test_catches_resampling_from_p_instead_of_the_residual(monkeypatch):
    monkeypatch.setattr(rejection, "residual_probs", lambda p, q: p)
    assert not follows_target(emitted_tokens(Q))


def test_a_draft_identical_to_the_target_accepts_everything():
    drafts = torch.stack([torch.multinomial(P[i], 500, replacement=True) for i in range(2)], dim=1)
    out = RejectionSampler(Sampler(CPU, 0))(P.log().repeat(500, 1), np.full(500, 2), drafts.flatten(),
                                            batch_of([SamplingParams(temperature=1.0)] * 500), P[:2].repeat(500, 1))
    assert out.num_accepted.tolist() == [2] * 500


def test_independent_acceptances_give_the_expected_accepted_length():
    """A point-mass proposal of token 0 where the target gives it probability alpha is
    accepted with probability alpha at every position, independently: the measured
    tokens per verify step then match (1 - alpha^(k+1)) / (1 - alpha)."""
    alpha, k, trials = 0.6, 4, 20_000
    p = torch.tensor([alpha, 1 - alpha])
    out = RejectionSampler(Sampler(CPU, 0))(p.log().repeat(trials * (k + 1), 1), np.full(trials, k),
                                            torch.zeros(trials * k, dtype=torch.long),
                                            batch_of([SamplingParams(temperature=1.0)] * trials))
    stats = SpecDecodeStats()
    for accepted in out.num_accepted.tolist():
        stats.record(k, accepted)
    assert stats.mean_accepted_length == pytest.approx(expected_accepted_length(alpha, k), rel=0.02)


# -- seeds -------------------------------------------------------------------------------

def seeded_rows(seeds: list[int | None], seq_ids: list[int], sampler_seed: int = 0) -> list[list[int]]:
    generator = torch.Generator().manual_seed(7)
    num = len(seeds)
    logits = torch.randn(num * 4, 50, generator=generator)
    drafts = logits.view(num, 4, 50)[:, :3].argmax(-1)  # proposals the target likes: long accepted runs
    params = [SamplingParams(temperature=1.0, seed=s) for s in seeds]
    sampler = RejectionSampler(Sampler(CPU, sampler_seed))
    return sampler(logits, np.full(num, 3), drafts.flatten(), SamplingBatch.from_params(seq_ids, params)).emitted()


def test_seeded_rows_are_reproducible_and_independent_of_their_batch():
    first = seeded_rows([11, 12, None, 13], [0, 1, 2, 3])
    assert seeded_rows([11, 12, None, 13], [0, 1, 2, 3]) == first
    # another engine seed changes the unseeded row only
    other = seeded_rows([11, 12, None, 13], [0, 1, 2, 3], sampler_seed=5)
    assert [other[i] for i in (0, 1, 3)] == [first[i] for i in (0, 1, 3)]
    # the seeded row 1, verified alone, draws exactly as it did in the batch
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(4 * 4, 50, generator=generator)[4:8]
    drafts = logits[:3].argmax(-1)
    alone = RejectionSampler(Sampler(CPU, 3))(logits, np.array([3]), drafts,
                                              SamplingBatch.from_params([1], [SamplingParams(temperature=1.0, seed=12)]))
    assert alone.emitted() == [first[1]]


def test_a_seeded_request_continues_its_stream_across_plain_and_verify_steps():
    """The plain sampler and the rejection sampler share the request's generator."""
    sampler = Sampler(CPU, 0)
    batch = SamplingBatch.from_params([4], [SamplingParams(temperature=1.0, seed=9)])
    logits = torch.zeros(1, 50)
    sampler(logits, batch)  # a plain step advances request 4's generator
    after_plain = RejectionSampler(sampler)(logits, np.array([0]), torch.zeros(0, dtype=torch.long), batch).emitted()
    fresh = RejectionSampler(Sampler(CPU, 0))(logits, np.array([0]), torch.zeros(0, dtype=torch.long), batch).emitted()
    first_plain = Sampler(CPU, 0)(logits, batch).tolist()
    assert fresh == [first_plain]          # no proposals: exactly the plain sampler's draw
    assert after_plain != fresh            # the stream moved on (seeded, so this holds every run)
