"""Turns the last-position logits of each sequence into its next token, on the device.

The sampler never waits for the GPU: its per-row settings arrive as a plain-data
:class:`SamplingBatch` (numpy, part of the step plan) and reach the device through
:func:`~tutorial_engine.transfer.to_device`, never through
``torch.tensor(python_list, device="cuda")``, which would block the CPU (chapter 7).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .sampling_params import SamplingParams
from .transfer import to_device


@dataclass
class SamplingBatch:
    """Sampling settings of the ``S`` rows a step samples, as arrays.

    Attributes:
        seq_ids: int64 ``[S]``, request ids (seeded requests own a generator).
        temperatures: float32 ``[S]``; 0 marks a greedy row.
        top_ks: int64 ``[S]``; 0 keeps every token.
        top_ps: float32 ``[S]``; 1 keeps every token.
        seeds: int64 ``[S]``; -1 marks a row without its own seed.
    """

    seq_ids: np.ndarray
    temperatures: np.ndarray
    top_ks: np.ndarray
    top_ps: np.ndarray
    seeds: np.ndarray

    @classmethod
    def from_params(cls, seq_ids: list[int], params: list[SamplingParams]) -> SamplingBatch:
        return cls(
            seq_ids=np.asarray(seq_ids, np.int64),
            temperatures=np.fromiter((0.0 if p.greedy else p.temperature for p in params), np.float32, len(params)),
            top_ks=np.fromiter((max(p.top_k, 0) for p in params), np.int64, len(params)),
            top_ps=np.fromiter((p.top_p for p in params), np.float32, len(params)),
            seeds=np.fromiter((-1 if p.seed is None else p.seed for p in params), np.int64, len(params)),
        )

    def __len__(self) -> int:
        return len(self.seq_ids)

    @property
    def all_greedy(self) -> bool:
        return not self.temperatures.any()

    @property
    def filtered_rows(self) -> np.ndarray:
        """bool ``[S]``: random rows with top-k or top-p."""
        return (self.temperatures > 0) & ((self.top_ks > 0) | (self.top_ps < 1))

    @property
    def needs_top_k_top_p(self) -> bool:
        return bool(self.filtered_rows.any())


class Sampler:
    """Greedy, temperature, top-k and top-p (nucleus) sampling for a batch.

    Random rows use the Gumbel-max trick: with ``E ~ Exp(1)`` per token,
    ``argmax(p / E) = argmax(logits / T - log E)`` is an exact sample from
    ``p = softmax(logits / T)`` and needs no sort or cumsum; only rows with top-k or
    top-p pay for a sort. A request with a ``seed`` owns a ``torch.Generator``, so its
    tokens do not depend on what else shares the batch.
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

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return to_device(array, self.device)

    def __call__(self, logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
        """Args: ``logits`` float ``[S, vocab]``, one row per entry of ``batch``.
        Returns: int64 ``[S]`` token ids on the logits' device (no sync with the host)."""
        greedy = logits.argmax(dim=-1)
        if batch.all_greedy:
            return greedy
        temperatures = self._to_device(np.where(batch.temperatures > 0, batch.temperatures, 1).astype(np.float32))
        scaled = logits.float() / temperatures[:, None]
        noise = torch.empty_like(scaled).exponential_(generator=self.generator)
        for row in np.flatnonzero(batch.seeds >= 0):  # seeded requests redraw from their own generator
            seq_id, seed = int(batch.seq_ids[row]), int(batch.seeds[row])
            noise[row].exponential_(generator=self._request_generator(seq_id, seed))
        sampled = (scaled - noise.log()).argmax(dim=-1)
        if batch.needs_top_k_top_p:  # only the rows that asked for it take the filtered draw
            probs = apply_top_k_top_p(torch.softmax(scaled, dim=-1), self._to_device(batch.top_ks),
                                      self._to_device(batch.top_ps))
            filtered = (probs / noise).argmax(dim=-1)
            sampled = torch.where(self._to_device(batch.filtered_rows), filtered, sampled)
        if (batch.temperatures == 0).any():
            sampled = torch.where(self._to_device(batch.temperatures == 0), greedy, sampled)
        return sampled


def apply_top_k_top_p(probs: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero out tokens outside each row's top-k and top-p set, ``[n, vocab]`` -> same.

    ``top_k`` int ``[n]`` (0 keeps all tokens), ``top_p`` float ``[n]``: the smallest
    high-probability set whose mass reaches p (the most likely token always survives).
    """
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    vocab = probs.shape[-1]
    ks = torch.where(top_k > 0, top_k, vocab)
    rank = torch.arange(vocab, device=probs.device)[None, :]
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    in_nucleus = (mass_before < top_p[:, None].to(probs.dtype)) | (top_p[:, None] >= 1) | (rank == 0)
    sorted_probs = sorted_probs * ((rank < ks[:, None]) & in_nucleus)  # rank 0 even if p rounds to 0
    return torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
