"""Triton kernels that fuse the elementwise parts of a decoder layer, used on CUDA.

In eager PyTorch, RMSNorm with its residual add is about eight kernels, RoPE about
sixteen and SwiGLU two (and Qwen3's per-head q/k norm first copies the strided q and k
views of the qkv projection to contiguous memory); with ~28 layers a decode step
launches over a thousand tiny kernels whose fixed cost (a few microseconds each, even inside a CUDA graph) rivals
the real work. Each function here does the same arithmetic as its reference in
``layers.py`` / ``rotary.py`` in a single pass over memory (the fusion that
nano-vLLM gets from ``torch.compile`` and vLLM from its custom ops). The torch code
stays the reference: CPU runs use it, and tests compare the two.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(
    x_ptr, residual_ptr, out_ptr, new_residual_ptr, weight_ptr,
    stride_x, stride_r, stride_o, stride_nr, n_cols, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        x = x + tl.load(residual_ptr + row * stride_r + cols, mask=mask, other=0.0)
        tl.store(new_residual_ptr + row * stride_nr + cols, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)
    normed = (xf * rstd).to(x.dtype).to(tl.float32)  # round like the reference before scaling
    w = tl.load(weight_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (normed * w).to(x.dtype), mask=mask)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    """RMSNorm over the last axis (Zhang & Sennrich, 2019), optionally after adding ``residual``.

    Args: ``x`` ``[..., n]`` (last axis contiguous), ``weight`` ``[n]``, ``residual`` like ``x``.
    Returns ``normalised`` (shape and dtype of ``x``), or ``(normalised, x + residual)``.
    """
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    out = torch.empty_like(x2)
    new_residual = torch.empty_like(x2) if residual is not None else out
    r2 = residual.reshape(-1, shape[-1]) if residual is not None else x2
    if x2.shape[0]:
        _rms_norm_kernel[(x2.shape[0],)](
            x2, r2, out, new_residual, weight,
            x2.stride(0), r2.stride(0), out.stride(0), new_residual.stride(0), shape[-1], eps,
            HAS_RESIDUAL=residual is not None, BLOCK=triton.next_power_of_2(shape[-1]),
        )
    if residual is None:
        return out.view(shape)
    return out.view(shape), new_residual.view(shape)


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_o, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + n_cols + cols, mask=mask, other=0.0)
    act = (gate / (1.0 + tl.exp(-gate))).to(up.dtype)  # silu, rounded like F.silu
    tl.store(out_ptr + row * stride_o + cols, (act.to(tl.float32) * up.to(tl.float32)).to(up.dtype), mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """SwiGLU's ``silu(gate) * up`` for ``x = [gate | up]`` ``[T, 2n]`` -> ``[T, n]``."""
    n = x.shape[-1] // 2
    out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    block = min(1024, triton.next_power_of_2(n))
    if x.shape[0]:
        _silu_and_mul_kernel[(x.shape[0], triton.cdiv(n, block))](x, out, x.stride(0), out.stride(0), n, BLOCK=block)
    return out


@triton.jit
def _cos_sin(positions_ptr, cos_sin_ptr, stride_cs, token, HALF: tl.constexpr):
    """cos and sin of the RoPE angles at ``token``'s position, ``[1, HALF]`` each."""
    pos = tl.load(positions_ptr + token).to(tl.int64)
    row = cos_sin_ptr + pos * stride_cs + tl.arange(0, HALF)[None, :]
    return tl.load(row), tl.load(row + HALF)


@triton.jit
def _rope_heads(
    src, dst, weight_ptr, cos, sin, stride_st, stride_sh, stride_dt, stride_dh, token, num_heads, eps,
    HALF: tl.constexpr, HEADS_P: tl.constexpr, NORM: tl.constexpr,
):
    """RoPE of one token's ``num_heads`` heads, a [HEADS_P, HALF] tile per half; with
    ``NORM``, each head's RMSNorm (Qwen3's q/k norm, weight ``[2 * HALF]``) first."""
    heads = tl.arange(0, HEADS_P)[:, None]
    dims = tl.arange(0, HALF)[None, :]
    mask = heads < num_heads
    base = src + token * stride_st + heads * stride_sh + dims
    x1 = tl.load(base, mask=mask, other=0.0)
    x2 = tl.load(base + HALF, mask=mask, other=0.0)
    x1f, x2f = x1.to(tl.float32), x2.to(tl.float32)
    if NORM:
        rstd = 1.0 / tl.sqrt((tl.sum(x1f * x1f, axis=1) + tl.sum(x2f * x2f, axis=1)) / (2 * HALF) + eps)
        w1 = tl.load(weight_ptr + dims).to(tl.float32)
        w2 = tl.load(weight_ptr + HALF + dims).to(tl.float32)
        # Round where the unfused layers round: after normalising, after the weight.
        x1f = ((x1f * rstd[:, None]).to(x1.dtype).to(tl.float32) * w1).to(x1.dtype).to(tl.float32)
        x2f = ((x2f * rstd[:, None]).to(x1.dtype).to(tl.float32) * w2).to(x1.dtype).to(tl.float32)
    out = dst + token * stride_dt + heads * stride_dh + dims
    tl.store(out, (x1f * cos - x2f * sin).to(x1.dtype), mask=mask)
    tl.store(out + HALF, (x2f * cos + x1f * sin).to(x1.dtype), mask=mask)


@triton.jit
def _rope_kernel(
    x_ptr, out_ptr, positions_ptr, cos_sin_ptr,
    stride_xt, stride_xh, stride_ot, stride_oh, stride_cs, num_heads,
    HALF: tl.constexpr, HEADS_P: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    cos, sin = _cos_sin(positions_ptr, cos_sin_ptr, stride_cs, token, HALF)
    _rope_heads(x_ptr, out_ptr, x_ptr, cos, sin, stride_xt, stride_xh, stride_ot, stride_oh, token, num_heads, 0.0,
                HALF, HEADS_P, False)  # no norm: the weight pointer and eps go unused


def rotary(x: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor) -> torch.Tensor:
    """RoPE (rotate-half pairing) of ``x`` ``[T, heads, head_dim]`` at ``positions`` int64 ``[T]``,
    with ``cos_sin_cache`` float32 ``[max_position, head_dim]`` = ``[cos | sin]``."""
    num_tokens, num_heads, head_dim = x.shape
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if num_tokens:
        _rope_kernel[(num_tokens,)](
            x, out, positions, cos_sin_cache,
            x.stride(0), x.stride(1), out.stride(0), out.stride(1), cos_sin_cache.stride(0), num_heads,
            HALF=head_dim // 2, HEADS_P=triton.next_power_of_2(num_heads),
        )
    return out


@triton.jit
def _qk_norm_rope_kernel(
    q_ptr, k_ptr, q_out_ptr, k_out_ptr, q_weight_ptr, k_weight_ptr, positions_ptr, cos_sin_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_qot, stride_qoh, stride_kot, stride_koh, stride_cs,
    num_q_heads, num_kv_heads, eps,
    HALF: tl.constexpr, Q_HEADS_P: tl.constexpr, KV_HEADS_P: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    cos, sin = _cos_sin(positions_ptr, cos_sin_ptr, stride_cs, token, HALF)
    _rope_heads(q_ptr, q_out_ptr, q_weight_ptr, cos, sin, stride_qt, stride_qh, stride_qot, stride_qoh,
                token, num_q_heads, eps, HALF, Q_HEADS_P, True)
    _rope_heads(k_ptr, k_out_ptr, k_weight_ptr, cos, sin, stride_kt, stride_kh, stride_kot, stride_koh,
                token, num_kv_heads, eps, HALF, KV_HEADS_P, True)


def qk_norm_rope(
    q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor,
    q_weight: torch.Tensor, k_weight: torch.Tensor, eps: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen3's per-head RMSNorm of q and k followed by RoPE, in one kernel.

    The same arithmetic as ``RMSNorm`` (``q_norm``/``k_norm``) then :func:`rotary`, but
    one launch per step and layer instead of six (two copies of the strided q/k views,
    two norms, two rotations), reading q and k where the qkv projection wrote them.

    Args: ``q`` ``[T, Hq, D]`` and ``k`` ``[T, Hkv, D]`` (head dim contiguous, any other
    strides), ``positions`` int64 ``[T]``, ``cos_sin_cache`` float32 ``[max_position, D]``,
    ``q_weight``/``k_weight`` ``[D]``. Returns new contiguous ``(q, k)``, shapes and dtype
    of the inputs.
    """
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    if num_tokens:
        _qk_norm_rope_kernel[(num_tokens,)](
            q, k, q_out, k_out, q_weight, k_weight, positions, cos_sin_cache,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1), cos_sin_cache.stride(0),
            num_q_heads, num_kv_heads, eps,
            HALF=head_dim // 2, Q_HEADS_P=triton.next_power_of_2(num_q_heads),
            KV_HEADS_P=triton.next_power_of_2(num_kv_heads),
        )
    return q_out, k_out
