"""Turns the last-position logits of each sequence into its next token."""

from __future__ import annotations

import torch

from .sampling_params import SamplingParams


class Sampler:
    """Greedy, temperature, top-k and top-p (nucleus) sampling for a batch.

    Random rows draw Gumbel-style exponential noise: ``argmax(p / E)`` with
    ``E ~ Exp(1)`` is an exact sample from ``p`` and needs no sort or cumsum.
    A request with a ``seed`` owns a ``torch.Generator``, so its tokens do not
    depend on what else shares the batch.
    """

    def __init__(self, device: torch.device, seed: int) -> None:
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.request_generators: dict[int, torch.Generator] = {}

    def forget(self, seq_id: int) -> None:
        self.request_generators.pop(seq_id, None)

    def _request_generator(self, seq_id: int, seed: int) -> torch.Generator:
        """The generator of a seeded request, created on its first sampled token."""
        if seq_id not in self.request_generators:
            self.request_generators[seq_id] = torch.Generator(device=self.device).manual_seed(seed)
        return self.request_generators[seq_id]

    def __call__(self, logits: torch.Tensor, seq_ids: list[int], params: list[SamplingParams]) -> torch.Tensor:
        """Args: ``logits`` float ``[n, vocab]``; one request id and SamplingParams per row.
        Returns: int64 ``[n]`` token ids, on the logits' device (no sync with the host)."""
        greedy = logits.argmax(dim=-1)
        random_rows = [i for i, p in enumerate(params) if not p.greedy]
        if not random_rows:
            return greedy
        rows = torch.tensor(random_rows, device=logits.device)
        sub = logits[rows].float()
        temperature = torch.tensor([params[i].temperature for i in random_rows], device=logits.device)
        probs = apply_top_k_top_p(
            torch.softmax(sub / temperature[:, None], dim=-1),
            [params[i].top_k for i in random_rows],
            [params[i].top_p for i in random_rows],
        )
        noise = torch.empty_like(probs).exponential_(generator=self.generator)
        for r, i in enumerate(random_rows):  # seeded requests redraw from their own generator
            if params[i].seed is not None:
                noise[r].exponential_(generator=self._request_generator(seq_ids[i], params[i].seed))
        greedy[rows] = (probs / noise).argmax(dim=-1)
        return greedy


def apply_top_k_top_p(probs: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """Zero out tokens outside each row's top-k and top-p set, ``[n, vocab]`` -> same.

    top-k <= 0 keeps all tokens; top-p keeps the smallest high-probability set whose
    mass reaches p (the most likely token always survives).
    """
    if all(k <= 0 for k in top_k) and all(p >= 1 for p in top_p):
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    vocab = probs.shape[-1]
    ks = torch.tensor([k if k > 0 else vocab for k in top_k], device=probs.device)
    ps = torch.tensor(top_p, device=probs.device, dtype=probs.dtype)
    rank = torch.arange(vocab, device=probs.device)[None, :]
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    keep = (rank < ks[:, None]) & ((mass_before < ps[:, None]) | (rank == 0))  # rank 0: even if p rounds to 0
    sorted_probs = sorted_probs * keep
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
