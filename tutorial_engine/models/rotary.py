"""Rotary position embedding, RoPE (Su et al., 2021, "RoFormer", section 3.4).

Each pair of feature dimensions of q and k is rotated by an angle proportional to
the token's position, so the dot product q·k depends only on the distance between
positions. We use the "rotate half" pairing (dimension i with i + d/2) that
Hugging Face's Llama and Qwen code and checkpoints use.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rope_inv_freq(head_dim: int, theta: float, scaling: dict | None = None) -> torch.Tensor:
    """Inverse frequencies ``theta^(-2i/d)``, float32 ``[head_dim / 2]``.

    ``scaling`` supports ``{"rope_type": "default"}`` and Llama 3.1's ``"llama3"``
    frequency-dependent scaling (Meta's Llama 3 reference code). Others raise ValueError.
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    rope_type = (scaling or {}).get("rope_type", "default")
    if rope_type == "default":
        return inv_freq
    if rope_type != "llama3":
        raise ValueError(f"rope_type={rope_type!r} is not supported; supported: 'default', 'llama3'")
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    smooth = (old_len / wavelen - low) / (high - low)
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    mid = (wavelen <= old_len / low) & (wavelen >= old_len / high)
    return torch.where(mid, (1 - smooth) * inv_freq / factor + smooth * inv_freq, scaled)


class RotaryEmbedding(nn.Module):
    """Applies RoPE to q ``[tokens, heads, head_dim]`` and k at integer ``positions`` ``[tokens]``.

    The cos/sin table covers ``max_position`` positions and is built once.
    """

    def __init__(self, head_dim: int, max_position: int, theta: float, scaling: dict | None = None) -> None:
        super().__init__()
        inv_freq = rope_inv_freq(head_dim, theta, scaling)
        angles = torch.outer(torch.arange(max_position, dtype=torch.float32), inv_freq)
        self.register_buffer("cos_sin_cache", torch.cat([angles.cos(), angles.sin()], dim=-1), persistent=False)
        self.fused = False  # one Triton kernel per tensor (models/fused.py); set on CUDA only

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fused:
            from . import fused

            return fused.rotary(q, positions, self.cos_sin_cache), fused.rotary(k, positions, self.cos_sin_cache)
        cos, sin = self.cos_sin_cache[positions].unsqueeze(1).chunk(2, dim=-1)
        return self._rotate(q, cos, sin), self._rotate(k, cos, sin)
