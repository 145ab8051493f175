"""Verification: which proposed tokens to keep, so the output is exactly the target's.

The target model scores a sequence's ``n`` proposed tokens ``x_1..x_n`` and one more
position in a single pass, giving its next-token distributions ``p_1..p_{n+1}``; the
proposer drew ``x_i`` from ``q_i``. Speculative sampling (Leviathan et al., 2023,
§2.3; Chen et al., 2023, Algorithm 2) walks the proposals in order:

* accept ``x_i`` with probability ``min(1, p_i(x_i) / q_i(x_i))``;
* at the first rejection, emit a token drawn from the residual
  ``norm(max(0, p_i - q_i))`` and stop;
* if all ``n`` are accepted, emit a bonus token drawn from ``p_{n+1}``.

Every emitted token then follows ``p`` exactly: a token ``x`` comes out at position
``i`` with probability ``q(x) min(1, p(x)/q(x)) + (1 - sum_y min(p(y), q(y))) *
max(0, p(x) - q(x)) / sum_y max(0, p(y) - q(y)) = p(x)``. Each verify step emits
between 1 and ``n + 1`` tokens. Greedy rows accept while ``x_i`` equals the target's
argmax and emit the argmax at the first mismatch (the same rule with ``p`` a point
mass). Prompt lookup has no ``q``: its proposals are point masses, so ``x_i`` is kept
with probability ``p_i(x_i)`` and a rejection draws from ``p_i`` without ``x_i``.

Layout: like the step plan's ``logits_indices``, rows are flat and of varying length.
Row ``b`` has ``n_b`` proposals (0 for a sequence that did not speculate: then this is
plain sampling) and ``n_b + 1`` target logits rows, consecutive, in batch order.
Internally rows are padded to ``K = max(n_b)`` so every step is a batched tensor op;
nothing waits for the device, so the result can stay there (chapter 7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..sampler import Sampler, SamplingBatch, apply_top_k_top_p
from ..transfer import to_device


@dataclass
class VerifyOutput:
    """The result of verifying ``B`` rows of at most ``K`` proposals.

    Attributes:
        token_ids: int64 ``[B, K + 1]`` on the logits' device: row ``b`` emits its first
            ``num_accepted[b] + 1`` entries (the accepted proposals, then the target's
            own token); the rest are -1.
        num_accepted: int64 ``[B]``, accepted proposals per row (0..n_b).
    """

    token_ids: torch.Tensor
    num_accepted: torch.Tensor

    def emitted(self) -> list[list[int]]:
        """Each row's emitted token ids (waits for the device)."""
        counts = (self.num_accepted + 1).tolist()
        return [row[:count] for row, count in zip(self.token_ids.tolist(), counts)]


def request_generator(sampler: Sampler, seq_id: int, seed: int) -> torch.Generator:
    """The ``torch.Generator`` of a seeded request, shared with the plain sampler so a
    request's random stream continues across ordinary and verify steps."""
    return sampler._request_generator(seq_id, seed)


def probs_from_logits(logits: torch.Tensor, temperatures: torch.Tensor, top_ks: torch.Tensor | None = None,
                      top_ps: torch.Tensor | None = None) -> torch.Tensor:
    """The distribution :class:`~tutorial_engine.sampler.Sampler` draws from.

    Args:
        logits: float ``[n, V]``.
        temperatures: float32 ``[n]``; rows at 0 (greedy) are computed at temperature 1.
        top_ks / top_ps: int64 / float32 ``[n]`` (0 / 1 keep every token), or None.
    Returns:
        float32 ``[n, V]``: ``softmax(logits / T)``, restricted to the top-k / top-p set
        and renormalized.
    """
    temperatures = torch.where(temperatures > 0, temperatures, torch.ones_like(temperatures))
    probs = torch.softmax(logits.float() / temperatures[:, None], dim=-1)
    if top_ks is None:
        return probs
    kept = apply_top_k_top_p(probs, top_ks, top_ps)
    return kept / kept.sum(dim=-1, keepdim=True)


def acceptance_mask(uniforms: torch.Tensor, target_prob: torch.Tensor, draft_prob: torch.Tensor) -> torch.Tensor:
    """Accept each proposal with probability ``min(1, p(x) / q(x))``.

    All arguments float ``[B, K]``: uniform draws in [0, 1), and ``p(x)``, ``q(x)`` of
    each proposed token ``x``. Written ``u * q < p`` so that ``q(x) = 0`` (a token the
    proposer could not have drawn) divides nothing. Returns bool ``[B, K]``.
    """
    return uniforms * draft_prob < target_prob


def residual_probs(target: torch.Tensor, draft: torch.Tensor) -> torch.Tensor:
    """The distribution to draw from after a rejection: ``max(0, p - q)``, unnormalized
    (the exponential-race draw below normalizes implicitly).

    ``target``, ``draft``: float ``[B, V]``. A row where ``p <= q`` everywhere (``p = q``
    up to rounding, so a rejection was a rounding accident) falls back to ``p``.
    """
    residual = (target - draft).clamp_(min=0)
    empty = residual.sum(dim=-1, keepdim=True) <= 0
    return torch.where(empty, target, residual)


class RejectionSampler:
    """Verifies proposals for a batch of rows (greedy and random rows mixed).

    Random draws come from the plain :class:`~tutorial_engine.sampler.Sampler`'s
    generators: a seeded request takes its ``n_b`` acceptance draws and then one
    exponential race over the vocabulary from its own generator, so its tokens do not
    depend on what else shares the batch; other rows share the engine's generator.
    Seeded outputs are reproducible run to run, but differ from the same seed without
    speculation (the draws are used differently); both follow the same distribution.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def __call__(self, target_logits: torch.Tensor, num_draft_tokens: np.ndarray, draft_token_ids: torch.Tensor,
                 batch: SamplingBatch, draft_probs: torch.Tensor | None = None) -> VerifyOutput:
        """Args:
            target_logits: float ``[sum(n_b + 1), V]``, the target's logits at each row's
                ``n_b`` proposal positions and the one after, rows consecutive.
            num_draft_tokens: int ``[B]`` (numpy, from the plan), ``n_b`` per row.
            draft_token_ids: int64 ``[sum(n_b)]``, the proposals, rows consecutive.
            batch: the ``B`` rows' sampling settings (one entry per row, not per position).
            draft_probs: float ``[sum(n_b), V]``, the draft model's ``q`` at each proposal
                (the distribution it sampled from), or None for point-mass proposals
                (prompt lookup).
        Returns:
            :class:`VerifyOutput`, on the logits' device, without waiting for it.
        """
        device, vocab = target_logits.device, target_logits.shape[-1]
        n = np.asarray(num_draft_tokens, np.int64)
        num_rows, k = len(n), int(n.max(initial=0))
        rows = torch.arange(num_rows, device=device)
        n_dev = to_device(n, device)
        logits_index, draft_index = _padded_indices(n, k)
        draft_index = to_device(draft_index, device)
        logits = target_logits[to_device(logits_index, device)]  # [B, K + 1, V]
        drafts = (draft_token_ids[draft_index] if k else
                  torch.zeros((num_rows, 0), dtype=torch.long, device=device))  # [B, K]
        in_range = torch.arange(k, device=device)[None, :] < n_dev[:, None]  # [B, K]
        target_argmax = logits.argmax(dim=-1)  # [B, K + 1]
        greedy_accept = drafts == target_argmax[:, :k]
        if batch.all_greedy:
            num_accepted = _count_leading(greedy_accept & in_range)
            return _assemble(drafts, num_accepted, target_argmax[rows, num_accepted])

        p = self._target_probs(logits, batch)  # [B, K + 1, V]
        uniforms, noise = self._draws(n, k, vocab, batch, device)
        p_draft = p[:, :k].gather(-1, drafts[..., None]).squeeze(-1)  # [B, K]
        q = draft_probs[draft_index].float() if draft_probs is not None and k else None  # [B, K, V]
        q_draft = q.gather(-1, drafts[..., None]).squeeze(-1) if q is not None else torch.ones_like(p_draft)
        greedy_rows = to_device(batch.temperatures == 0, device)
        accept = torch.where(greedy_rows[:, None], greedy_accept, acceptance_mask(uniforms, p_draft, q_draft))
        num_accepted = _count_leading(accept & in_range)

        # The final token: from the residual at the first rejection, else the bonus from p_{n+1}.
        p_final = p[rows, num_accepted]  # [B, V]
        dist = p_final
        if k:
            at = num_accepted.clamp(max=k - 1)
            q_final = q[rows, at] if q is not None else torch.nn.functional.one_hot(drafts[rows, at], vocab).float()
            rejected = num_accepted < n_dev
            dist = torch.where(rejected[:, None], residual_probs(p_final, q_final), p_final)
        sampled = (dist / noise).argmax(dim=-1)  # exponential race: an exact draw from norm(dist)
        final = torch.where(greedy_rows, target_argmax[rows, num_accepted], sampled)
        return _assemble(drafts, num_accepted, final)

    def _target_probs(self, logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
        """``p`` at every position: each row's settings repeated over its ``K + 1`` positions."""
        num_rows, positions, vocab = logits.shape
        device = logits.device

        def per_position(values: np.ndarray) -> torch.Tensor:
            return to_device(np.repeat(values, positions), device)

        filtered = batch.needs_top_k_top_p
        probs = probs_from_logits(logits.reshape(-1, vocab), per_position(batch.temperatures),
                                  per_position(batch.top_ks) if filtered else None,
                                  per_position(batch.top_ps) if filtered else None)
        return probs.view(num_rows, positions, vocab)

    def _draws(self, n: np.ndarray, k: int, vocab: int, batch: SamplingBatch,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniforms float32 ``[B, K]`` for the acceptance tests and Exp(1) noise float32
        ``[B, V]`` for the final draw; seeded rows redraw theirs from their own generator."""
        uniforms = torch.rand((len(n), k), generator=self.sampler.generator, device=device)
        noise = torch.empty((len(n), vocab), device=device).exponential_(generator=self.sampler.generator)
        for row in np.flatnonzero((batch.seeds >= 0) & (batch.temperatures > 0)):
            generator = request_generator(self.sampler, int(batch.seq_ids[row]), int(batch.seeds[row]))
            uniforms[row, : n[row]] = torch.rand(int(n[row]), generator=generator, device=device)
            noise[row].exponential_(generator=generator)
        return uniforms, noise


def _padded_indices(n: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices from the flat layout to the padded one: int64 ``[B, K + 1]`` into
    the logits rows and ``[B, K]`` into the proposals. Padding repeats a row's last
    valid entry (masked out later), so every index is in bounds."""
    positions = np.arange(k + 1)[None, :]
    logits_start = np.cumsum(n + 1) - (n + 1)  # exclusive prefix sums
    logits_index = logits_start[:, None] + np.minimum(positions, n[:, None])
    draft_start = np.cumsum(n) - n
    draft_index = np.minimum(draft_start[:, None] + np.minimum(positions[:, :k], np.maximum(n - 1, 0)[:, None]),
                             max(int(n.sum()) - 1, 0))
    return logits_index, draft_index


def _count_leading(accept: torch.Tensor) -> torch.Tensor:
    """int64 ``[B]``: the number of leading True values of each row of bool ``[B, K]``."""
    return accept.long().cumprod(dim=-1).sum(dim=-1)


def _assemble(drafts: torch.Tensor, num_accepted: torch.Tensor, final: torch.Tensor) -> VerifyOutput:
    """Accepted proposals, then the final token, then -1 padding: int64 ``[B, K + 1]``."""
    num_rows, k = drafts.shape
    positions = torch.arange(k + 1, device=drafts.device)[None, :]
    padded = torch.cat([drafts, drafts.new_full((num_rows, 1), -1)], dim=1)
    tokens = torch.where(positions < num_accepted[:, None], padded, -1)
    tokens[torch.arange(num_rows, device=drafts.device), num_accepted] = final
    return VerifyOutput(token_ids=tokens, num_accepted=num_accepted)
