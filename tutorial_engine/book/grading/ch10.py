"""Chapter 10 tasks: how many tokens a verify step gains, and the acceptance rule of
speculative decoding (Leviathan et al., 2023, §2.3 and §3.1; Chen et al., 2023).

A proposer guesses ``k`` tokens; the target scores them in one pass and keeps the
longest prefix it agrees with, plus one token of its own. Under greedy decoding
"agrees" means "equals the target's argmax"; with sampling, a proposal ``x`` drawn
from ``q`` is kept with probability ``min(1, p(x) / q(x))`` and a rejection draws from
the residual ``norm(max(0, p - q))``, which makes the output follow ``p`` exactly. The
engine's batched version is ``tutorial_engine.spec_decode.RejectionSampler``.
"""

from __future__ import annotations

import random

from .task import Task


def tokens_per_verify_step(alpha: float, k: int) -> float:
    """Expected tokens a verify step emits with ``k`` proposals, each accepted with
    probability ``alpha`` independently: the accepted prefix plus the target's own token."""
    if alpha == 1:
        return float(k + 1)
    return (1 - alpha ** (k + 1)) / (1 - alpha)


def greedy_verify(proposals: list[int], target_argmax: list[int]) -> list[int]:
    """The tokens a greedy verify step emits. ``target_argmax[i]`` is the target's
    argmax after the sequence's last token and the first ``i`` proposals
    (``len(proposals) + 1`` entries)."""
    emitted = []
    for proposal, target in zip(proposals, target_argmax):
        if proposal != target:
            return emitted + [target]  # the target's own token replaces the first mismatch
        emitted.append(proposal)
    return emitted + [target_argmax[len(proposals)]]  # all accepted: the bonus token


def accept_proposal(p: list[float], q: list[float], proposal: int, u: float) -> bool:
    """Keep ``proposal`` (drawn from ``q``) given the target's ``p`` and a uniform
    draw ``u`` in [0, 1): with probability ``min(1, p(x) / q(x))``."""
    return u * q[proposal] < p[proposal]


def residual_distribution(p: list[float], q: list[float]) -> list[float]:
    """The distribution to draw from after a rejection: ``max(0, p - q)``, normalized
    (``p`` itself where ``p <= q`` everywhere, i.e. ``p == q``)."""
    residual = [max(0.0, pi - qi) for pi, qi in zip(p, q)]
    total = sum(residual)
    if total <= 0:
        return list(p)
    return [r / total for r in residual]


def _distribution(rng: random.Random, vocab: int) -> list[float]:
    weights = [rng.uniform(0.05, 1.0) for _ in range(vocab)]
    total = sum(weights)
    return [w / total for w in weights]


def _alpha_case(rng: random.Random) -> dict:
    return {"alpha": round(rng.uniform(0.0, 0.99), 3), "k": rng.randint(0, 10)}


def _greedy_case(rng: random.Random) -> dict:
    k = rng.randint(1, 6)
    target = [rng.randint(0, 5) for _ in range(k + 1)]
    agree = rng.randint(0, k)  # the first `agree` proposals match
    proposals = target[:agree] + [rng.randint(0, 5) for _ in range(k - agree)]
    if agree < k and proposals[agree] == target[agree]:
        proposals[agree] = (target[agree] + 1) % 6
    return {"proposals": proposals, "target_argmax": target}


def _accept_case(rng: random.Random) -> dict:
    vocab = rng.randint(2, 8)
    return {"p": _distribution(rng, vocab), "q": _distribution(rng, vocab), "proposal": rng.randrange(vocab),
            "u": round(rng.random(), 4)}


def _residual_case(rng: random.Random) -> dict:
    vocab = rng.randint(2, 8)
    return {"p": _distribution(rng, vocab), "q": _distribution(rng, vocab)}


tokens_per_step = Task(
    "ch10.tokens_per_step", tokens_per_verify_step, _alpha_case,
    hint_text="The target's own token always comes out (1); proposal i counts only if it and every proposal "
              "before it were accepted (alpha ** i). Sum i = 0..k: a geometric series. Mind alpha = 1.",
    edge_cases=[{"alpha": 0.8, "k": 4}, {"alpha": 0.0, "k": 4}, {"alpha": 1.0, "k": 4}, {"alpha": 0.7, "k": 0}],
)

greedy = Task(
    "ch10.greedy", greedy_verify, _greedy_case,
    hint_text="Walk the proposals in order while each equals the target's argmax at its position. At the first "
              "mismatch emit the target's argmax there and stop; if none mismatches, the last argmax is a bonus.",
    edge_cases=[{"proposals": [3, 1, 4], "target_argmax": [3, 2, 4, 1]},
                {"proposals": [3, 1, 4], "target_argmax": [3, 1, 4, 1]},
                {"proposals": [0, 1, 4], "target_argmax": [3, 1, 4, 1]}],
)

accept = Task(
    "ch10.accept", accept_proposal, _accept_case,
    hint_text="Accept with probability min(1, p(x) / q(x)): compare the uniform draw u with that ratio. A token "
              "the target likes more than the proposer (p(x) >= q(x)) is always kept.",
    edge_cases=[{"p": [0.5, 0.2, 0.3], "q": [0.3, 0.4, 0.3], "proposal": 1, "u": 0.3},
                {"p": [0.2, 0.4, 0.4], "q": [0.6, 0.2, 0.2], "proposal": 1, "u": 0.7},
                {"p": [0.5, 0.2, 0.3], "q": [0.3, 0.4, 0.3], "proposal": 1, "u": 0.6}],
)

residual = Task(
    "ch10.residual", residual_distribution, _residual_case,
    hint_text="After a rejection, draw where p exceeds q: take max(0, p - q) per token and divide by its sum. "
              "If p and q are equal there is no excess: return p.",
    edge_cases=[{"p": [0.5, 0.3, 0.2], "q": [0.2, 0.3, 0.5]}, {"p": [0.4, 0.4, 0.2], "q": [0.1, 0.3, 0.6]},
                {"p": [0.25, 0.75], "q": [0.25, 0.75]}],
)

TASKS = [tokens_per_step, greedy, accept, residual]
