"""One decoder for the Llama family: Llama, Qwen2 and Qwen3.

The three differ in small switches read from the Hugging Face config:
Qwen2 adds biases to the q/k/v projections; Qwen3 normalises each head of q and k
with RMSNorm before RoPE ("QK-norm"); embeddings may be tied to the output head.
Architecture: Llama (Touvron et al., 2023), grouped-query attention (Ainslie et
al., 2023), SwiGLU MLP (Shazeer, 2020), RMSNorm pre-normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attention import TORCH_BACKEND, AttentionBackend, AttentionMetadata
from .layers import (
    MergedColumnParallelLinear,
    ParallelLMHead,
    QKVParallelLinear,
    RMSNorm,
    RowParallelLinear,
    SiluAndMul,
    VocabParallelEmbedding,
)
from .rotary import RotaryEmbedding


@dataclass(frozen=True)
class DecoderSpec:
    """The architecture facts the engine needs, read once from a transformers config."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None
    max_position_embeddings: int
    qkv_bias: bool
    qk_norm: bool
    tie_word_embeddings: bool


class PagedAttention(nn.Module):
    """Stores this step's K/V into the layer's cache pages, then attends over them.

    ``k_cache`` / ``v_cache`` (``[num_blocks, block_size, num_kv_heads, head_dim]``)
    are attached by the model runner once memory is profiled.
    """

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale = head_dim**-0.5
        self.backend: AttentionBackend = TORCH_BACKEND
        self.k_cache = self.v_cache = torch.empty(0)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        self.backend.store_kvcache(k, v, self.k_cache, self.v_cache, meta.slot_mapping)
        return self.backend.paged_attention(q, self.k_cache, self.v_cache, meta, self.scale)


class Attention(nn.Module):
    def __init__(self, spec: DecoderSpec, rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        self.qkv_proj = QKVParallelLinear(spec.hidden_size, spec.head_dim, spec.num_heads, spec.num_kv_heads, spec.qkv_bias)
        self.num_heads, self.num_kv_heads = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads
        self.head_dim = spec.head_dim
        self.o_proj = RowParallelLinear(spec.num_heads * spec.head_dim, spec.hidden_size)
        self.rotary_emb = rotary_emb  # shared by all layers: one cos/sin table per model
        self.q_norm = RMSNorm(spec.head_dim, spec.rms_norm_eps) if spec.qk_norm else None
        self.k_norm = RMSNorm(spec.head_dim, spec.rms_norm_eps) if spec.qk_norm else None
        self.attn = PagedAttention(self.num_heads, self.num_kv_heads, spec.head_dim)
        self.fused_qk_norm_rope = False  # one kernel instead of six (models/fused.py); set on CUDA only

    def forward(
        self, positions: torch.Tensor, hidden: torch.Tensor, meta: AttentionMetadata
    ) -> torch.Tensor:
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = self.qkv_proj(hidden).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(-1, self.num_heads, self.head_dim)
        k = k.view(-1, self.num_kv_heads, self.head_dim)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        q, k = self.norm_and_rotate(positions, q, k)
        out = self.attn(q, k, v, meta)
        return self.o_proj(out.flatten(1))

    def norm_and_rotate(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        """Qwen3's per-head RMSNorm of q and k (when the model has it), then RoPE."""
        if self.q_norm is None:
            return self.rotary_emb(positions, q, k)
        if self.fused_qk_norm_rope:
            from . import fused

            cos_sin = self.rotary_emb.cos_sin_cache
            return fused.qk_norm_rope(q, k, positions, cos_sin, self.q_norm.weight,
                                      self.k_norm.weight, self.q_norm.eps)
        return self.rotary_emb(positions, self.q_norm(q), self.k_norm(k))


class MLP(nn.Module):
    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.gate_up_proj = MergedColumnParallelLinear(spec.hidden_size, [spec.intermediate_size] * 2)
        self.act_fn = SiluAndMul()
        self.down_proj = RowParallelLinear(spec.intermediate_size, spec.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_up_proj(x)))


class DecoderLayer(nn.Module):
    def __init__(self, spec: DecoderSpec, rotary_emb: RotaryEmbedding) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.self_attn = Attention(spec, rotary_emb)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.mlp = MLP(spec)

    def forward(self, positions, hidden, residual, meta):
        if residual is None:
            hidden, residual = self.input_layernorm(hidden), hidden
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, meta)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class DecoderModel(nn.Module):
    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(spec.vocab_size, spec.hidden_size)
        # One RoPE table for all layers (Qwen3-0.6B's covers 40,960 positions: 21 MB).
        rotary_emb = RotaryEmbedding(spec.head_dim, spec.max_position_embeddings, spec.rope_theta, spec.rope_scaling)
        self.layers = nn.ModuleList(DecoderLayer(spec, rotary_emb) for _ in range(spec.num_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)

    def forward(self, input_ids, positions, meta):
        hidden, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            hidden, residual = layer(positions, hidden, residual, meta)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class CausalLM(nn.Module):
    """Decoder + output head. ``forward`` gives hidden states ``[T, hidden]`` for the
    step's ``T`` new tokens; ``compute_logits`` maps selected rows to ``[n, vocab]``.

    ``packed_modules`` tells the loader which checkpoint tensors were fused here.
    """

    packed_modules = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0),
        "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, spec: DecoderSpec) -> None:
        super().__init__()
        self.spec = spec
        self.model = DecoderModel(spec)
        self.lm_head = ParallelLMHead(spec.vocab_size, spec.hidden_size)
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor | None:
        """Logits ``[n, vocab]`` of ``hidden`` ``[n, hidden]``; None on tensor-parallel
        ranks other than 0 (rank 0 gathers the vocabulary shards and samples)."""
        return self.lm_head(hidden)

    def use_fused_kernels(self, kernels: frozenset[str]) -> None:
        """Switch the named fused Triton kernels on (the rest off): names from
        ``kernel_registry.FUSED_KERNELS``, chosen by ``select_fused_kernels``."""
        for module in self.modules():
            if isinstance(module, RMSNorm):
                module.fused = "rms_norm" in kernels
            elif isinstance(module, SiluAndMul):
                module.fused = "silu_and_mul" in kernels
            elif isinstance(module, RotaryEmbedding):
                module.fused = "rotary" in kernels
            elif isinstance(module, Attention):
                module.fused_qk_norm_rope = "qk_norm_rope" in kernels and module.q_norm is not None

    def attention_layers(self) -> list[PagedAttention]:
        return [layer.self_attn.attn for layer in self.model.layers]
