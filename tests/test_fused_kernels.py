"""The fused Triton kernels (models/fused.py) against the torch reference layers.

Without a GPU they run under Triton's interpreter (set before Triton is imported,
as in test_triton_attention.py); on a GPU the same tests run natively in bf16 too.
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from tutorial_engine.models import fused  # noqa: E402
from tutorial_engine.models.layers import RMSNorm, SiluAndMul  # noqa: E402
from tutorial_engine.models.rotary import RotaryEmbedding  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32] + ([torch.bfloat16] if DEVICE == "cuda" else [])


def tolerance(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 64), (3, 4, 16), (7, 100)])
def test_rms_norm_with_and_without_residual(dtype, shape):
    g = torch.Generator().manual_seed(0)
    x, residual = (torch.randn(shape, generator=g).to(DEVICE, dtype) for _ in range(2))
    norm = RMSNorm(shape[-1], 1e-6).to(DEVICE, dtype)
    norm.weight.data = (torch.rand(shape[-1], generator=g) + 0.5).to(DEVICE, dtype)
    torch.testing.assert_close(fused.rms_norm(x, norm.weight, norm.eps), norm._norm(x), **tolerance(dtype))
    out, new_residual = fused.rms_norm(x, norm.weight, norm.eps, residual)
    torch.testing.assert_close(new_residual, x + residual, **tolerance(dtype))
    torch.testing.assert_close(out, norm._norm(x + residual), **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul(dtype):
    x = torch.randn(6, 2 * 172, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    gate, up = x.chunk(2, dim=-1)
    torch.testing.assert_close(fused.silu_and_mul(x), torch.nn.functional.silu(gate) * up, **tolerance(dtype))
    cpu = x.cpu().float()
    torch.testing.assert_close(SiluAndMul()(cpu), torch.nn.functional.silu(cpu[:, :172]) * cpu[:, 172:])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", [1, 3, 8])
def test_rotary_matches_reference(dtype, heads):
    g = torch.Generator().manual_seed(2)
    rope = RotaryEmbedding(16, 64, 10000.0).to(DEVICE)
    x = torch.randn(9, heads, 16, generator=g).to(DEVICE, dtype)
    positions = torch.randint(0, 64, (9,), generator=g).to(DEVICE)
    cos, sin = rope.cos_sin_cache[positions].unsqueeze(1).chunk(2, dim=-1)
    expected = RotaryEmbedding._rotate(x, cos, sin)
    torch.testing.assert_close(fused.rotary(x, positions, rope.cos_sin_cache), expected, **tolerance(dtype))
    # a strided view (q split out of the fused qkv projection) works too
    qkv = torch.randn(9, 2 * heads * 16, generator=g).to(DEVICE, dtype)
    q = qkv[:, : heads * 16].view(9, heads, 16)
    cos, sin = rope.cos_sin_cache[positions].unsqueeze(1).chunk(2, dim=-1)
    torch.testing.assert_close(fused.rotary(q, positions, rope.cos_sin_cache), RotaryEmbedding._rotate(q, cos, sin),
                               **tolerance(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q_heads,kv_heads", [(4, 2), (3, 1), (16, 8)])
def test_qk_norm_rope_matches_norm_then_rotary(dtype, q_heads, kv_heads):
    """The fused kernel reads q and k as strided views of one qkv row, as Attention does."""
    g = torch.Generator().manual_seed(3)
    head_dim, tokens = 16, 7
    rope = RotaryEmbedding(head_dim, 64, 10000.0).to(DEVICE)
    q_norm, k_norm = (RMSNorm(head_dim, 1e-6).to(DEVICE, dtype) for _ in range(2))
    for norm in (q_norm, k_norm):
        norm.weight.data = (torch.rand(head_dim, generator=g) + 0.5).to(DEVICE, dtype)
    qkv = torch.randn(tokens, (q_heads + 2 * kv_heads) * head_dim, generator=g).to(DEVICE, dtype)
    q, k, _ = qkv.split([q_heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
    q, k = q.view(tokens, q_heads, head_dim), k.view(tokens, kv_heads, head_dim)
    positions = torch.randint(0, 64, (tokens,), generator=g).to(DEVICE)
    cos, sin = rope.cos_sin_cache[positions].unsqueeze(1).chunk(2, dim=-1)
    expected_q = RotaryEmbedding._rotate(q_norm._norm(q), cos, sin)
    expected_k = RotaryEmbedding._rotate(k_norm._norm(k), cos, sin)
    got_q, got_k = fused.qk_norm_rope(q, k, positions, rope.cos_sin_cache, q_norm.weight, k_norm.weight, 1e-6)
    assert got_q.is_contiguous() and got_k.is_contiguous()
    torch.testing.assert_close(got_q, expected_q, **tolerance(dtype))
    torch.testing.assert_close(got_k, expected_k, **tolerance(dtype))
    # the comparison is sensitive to the per-head weights: swapping q's and k's fails it
    swapped_q, _ = fused.qk_norm_rope(q, k, positions, rope.cos_sin_cache, k_norm.weight, q_norm.weight, 1e-6)
    assert not torch.allclose(swapped_q, expected_q, **tolerance(dtype))
