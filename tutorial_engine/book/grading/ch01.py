"""Chapter 1 tasks: rotary position embedding and grouped-query attention.

The references follow the conventions of the engine's model code (and of Hugging
Face's Llama / Qwen checkpoints): RoPE pairs dimension ``i`` with ``i + d/2``
("rotate half", Su et al., 2021, section 3.4), and each key/value head serves a
contiguous group of ``num_heads / num_kv_heads`` query heads (Ainslie et al., 2023).
"""

from __future__ import annotations

import random

import torch

from .task import Task, values_match


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate ``x`` float32 ``[tokens, heads, head_dim]`` by its tokens' ``positions``
    (int64 ``[tokens]``): pair ``i`` turns by ``position * theta^(-2i/head_dim)``."""
    head_dim, half = x.shape[-1], x.shape[-1] // 2
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # [head_dim / 2]
    angles = positions[:, None].float() * inv_freq[None, :]  # [tokens, head_dim / 2]
    cos, sin = angles.cos()[:, None, :], angles.sin()[:, None, :]  # broadcast over heads
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of one sequence: q ``[T, num_heads, D]``, k and v
    ``[T, num_kv_heads, D]`` -> ``[T, num_heads, D]``; scale ``D ** -0.5``."""
    group = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(group, dim=1)  # query head h reads KV head h // group
    v = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * q.shape[-1] ** -0.5  # [heads, T, T]
    causal = torch.ones(q.shape[0], q.shape[0], dtype=torch.bool).tril()
    scores = scores.masked_fill(~causal, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), v)


def _generator(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _rope_case(rng: random.Random) -> dict:
    tokens, heads, head_dim = rng.randint(1, 12), rng.randint(1, 4), rng.choice([2, 4, 8, 16, 64])
    g = _generator(rng)
    return {
        "x": torch.randn(tokens, heads, head_dim, generator=g),
        "positions": torch.randint(0, 1024, (tokens,), generator=g),
        "theta": rng.choice([10000.0, 500000.0, 1000000.0]),
    }


def _gqa_case(rng: random.Random) -> dict:
    tokens, kv_heads, group, head_dim = rng.randint(1, 10), rng.choice([1, 2, 4]), rng.choice([1, 2, 4]), rng.choice([4, 8, 16])
    g = _generator(rng)
    return {
        "q": torch.randn(tokens, kv_heads * group, head_dim, generator=g),
        "k": torch.randn(tokens, kv_heads, head_dim, generator=g),
        "v": torch.randn(tokens, kv_heads, head_dim, generator=g),
    }


_g = torch.Generator().manual_seed(0)
rope = Task(
    "ch01.rope", apply_rope, _rope_case,
    hint_text="inv_freq = 1 / theta ** (arange(0, d, 2) / d); angle = position * inv_freq, one per pair; "
              "split x into halves x1 (dims 0..d/2-1) and x2 (the rest) and rotate each (x1[i], x2[i]) pair.",
    edge_cases=[{"x": torch.randn(3, 2, 8, generator=_g), "positions": torch.tensor([0, 1, 100]), "theta": 10000.0}],
    # float32 angles of ~1000 radians carry ~1e-4 rounding whichever way they are computed
    compare=lambda got, expected: values_match(got, expected, rtol=1e-3, atol=1e-3),
)

gqa = Task(
    "ch01.gqa", gqa_attention, _gqa_case,
    hint_text="Repeat each KV head for the group of query heads it serves with repeat_interleave (head h uses "
              "KV head h // group), scale scores by D ** -0.5, mask future keys (-inf), softmax over keys.",
    edge_cases=[{"q": torch.randn(5, 4, 8, generator=_g), "k": torch.randn(5, 2, 8, generator=_g),
                 "v": torch.randn(5, 2, 8, generator=_g)}],
)

TASKS = [rope, gqa]
