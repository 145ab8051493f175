"""Building blocks of Llama-family decoders, written to shard for tensor parallelism.

Each weight carries a ``weight_loader(param, loaded, shard_id=None)`` that copies this
rank's slice of a full checkpoint tensor, so the loader never needs to know how a
layer is split. ``loaded`` is a tensor or a lazy safetensors slice (``get_slice``):
both index like ``loaded[a:b]`` / ``loaded[:, a:b]``, and a slice reads only those
rows or columns from the file, so no rank ever holds the whole model.

Column-parallel layers split output features, row-parallel layers split input
features and sum partial results with an all-reduce (Megatron-LM, Shoeybi et al.,
2019, section 3). A layer reads its rank and the world size once, when it is built
(see ``distributed.building_rank``); with one rank it never communicates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_reduce, gather_to_rank0, get_tp_rank, get_tp_size


def _divide(numerator: int, denominator: int, what: str) -> int:
    if numerator % denominator:
        raise ValueError(f"{what}={numerator} is not divisible by tensor_parallel_size={denominator}")
    return numerator // denominator


def default_weight_loader(param: nn.Parameter, loaded: torch.Tensor) -> None:
    """Copy the whole tensor (replicated weights: norms, row-parallel biases)."""
    loaded = loaded[:]
    if param.shape != loaded.shape:
        raise ValueError(f"checkpoint tensor of shape {tuple(loaded.shape)} does not fit parameter {tuple(param.shape)}")
    param.data.copy_(loaded)


class ColumnParallelLinear(nn.Module):
    """``y = x W^T + b`` with W's rows (output features) split across ranks.

    Shapes: x ``[tokens, input_size]`` -> y ``[tokens, output_size / tp]``.
    """

    def __init__(self, input_size: int, output_size: int, bias: bool = False) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()
        self.output_size_per_rank = _divide(output_size, self.tp_size, "output_size")
        self.weight = nn.Parameter(torch.empty(self.output_size_per_rank, input_size),
                                   requires_grad=False)
        self.weight.weight_loader = self.weight_loader
        self.bias = None
        if bias:
            self.bias = nn.Parameter(torch.empty(self.output_size_per_rank),
                                     requires_grad=False)
            self.bias.weight_loader = self.weight_loader

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        size = param.shape[0]
        param.data.copy_(loaded[self.tp_rank * size : (self.tp_rank + 1) * size])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Several column-parallel projections of the same input fused into one matmul
    (e.g. SwiGLU's gate and up projections). ``shard_id`` indexes ``output_sizes``."""

    def __init__(self, input_size: int, output_sizes: list[int], bias: bool = False) -> None:
        for size in output_sizes:  # each part is split on its own, so each must divide
            _divide(size, get_tp_size(), "output_size")
        self.output_sizes = output_sizes
        super().__init__(input_size, sum(output_sizes), bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: int = 0) -> None:
        offset = sum(self.output_sizes[:shard_id]) // self.tp_size
        size = self.output_sizes[shard_id] // self.tp_size
        shard = loaded[self.tp_rank * size : (self.tp_rank + 1) * size]
        param.data.narrow(0, offset, size).copy_(shard)


class QKVParallelLinear(ColumnParallelLinear):
    """The query, key and value projections fused; each rank gets whole heads.

    Output per rank: ``[q heads/tp * head_dim | kv heads/tp * head_dim | same]``.
    KV heads are replicated when there are fewer of them than ranks: with ``tp`` a
    multiple of ``num_kv_heads``, ranks ``r`` with the same ``r // (tp / num_kv_heads)``
    hold the same one, which is the KV head their query heads read. Rank ``r`` holds
    query heads ``[r * num_heads / tp, (r + 1) * num_heads / tp)``.
    """

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int,
                 num_kv_heads: int, bias: bool = False) -> None:
        tp = get_tp_size()
        self.head_dim = head_dim
        self.num_heads = _divide(num_heads, tp, "num_attention_heads")
        if num_kv_heads >= tp:
            self.num_kv_heads = _divide(num_kv_heads, tp, "num_key_value_heads")
            self.kv_replicas = 1
        else:
            self.num_kv_heads = 1
            self.kv_replicas = _divide(tp, num_kv_heads, "tensor_parallel_size")
        total = (self.num_heads + 2 * self.num_kv_heads) * head_dim * tp
        super().__init__(hidden_size, total, bias)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor,
                      shard_id: str = "q") -> None:
        q_size = self.num_heads * self.head_dim
        kv_size = self.num_kv_heads * self.head_dim
        if shard_id == "q":
            offset, size, rank = 0, q_size, self.tp_rank
        else:
            offset = q_size if shard_id == "k" else q_size + kv_size
            size, rank = kv_size, self.tp_rank // self.kv_replicas
        shard = loaded[rank * size : (rank + 1) * size]
        param.data.narrow(0, offset, size).copy_(shard)


class RowParallelLinear(nn.Module):
    """``y = x W^T + b`` with W's columns (input features) split across ranks; the
    partial products are summed with an all-reduce. Bias is added once, after it."""

    def __init__(self, input_size: int, output_size: int, bias: bool = False) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()
        self.input_size_per_rank = _divide(input_size, self.tp_size, "input_size")
        self.weight = nn.Parameter(torch.empty(output_size, self.input_size_per_rank),
                                   requires_grad=False)
        self.weight.weight_loader = self.weight_loader
        self.bias = None
        if bias:
            self.bias = nn.Parameter(torch.empty(output_size), requires_grad=False)
            self.bias.weight_loader = default_weight_loader

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        size = param.shape[1]
        param.data.copy_(loaded[:, self.tp_rank * size : (self.tp_rank + 1) * size])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight)
        if self.tp_size > 1:  # each rank holds a partial sum over its input features
            all_reduce(y)
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(nn.Module):
    """Token embedding with the vocabulary split across ranks; each rank looks up
    the ids it owns, zeros the rest, and an all-reduce assembles the rows."""

    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()
        self.vocab_size = vocab_size
        self.vocab_per_rank = math.ceil(vocab_size / self.tp_size)
        self.vocab_start = self.tp_rank * self.vocab_per_rank
        self.weight = nn.Parameter(torch.zeros(self.vocab_per_rank, hidden_size), requires_grad=False)
        self.weight.weight_loader = self.weight_loader

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor) -> None:
        # The last shard may be short (vocab not divisible): its padding rows stay zero.
        shard = loaded[self.vocab_start : min(self.vocab_start + self.vocab_per_rank, self.vocab_size)]
        param.data[: shard.shape[0]].copy_(shard)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.vocab_start
        mine = (local >= 0) & (local < self.vocab_per_rank)
        out = F.embedding(local.clamp(0, self.vocab_per_rank - 1), self.weight) * mine.unsqueeze(-1)
        return all_reduce(out)


class ParallelLMHead(VocabParallelEmbedding):
    """Output projection to vocabulary logits, split by vocabulary rows.

    Shapes: ``[n, hidden] -> [n, vocab]`` on rank 0, which samples; the other ranks
    send their ``[n, vocab / tp]`` slices there and return None (a gather, not an
    all-gather: only the sampling rank needs the logits).
    """

    def forward(self, hidden: torch.Tensor) -> torch.Tensor | None:
        logits = F.linear(hidden, self.weight)
        if self.tp_size > 1:
            logits = gather_to_rank0(logits, self.tp_size)
        return None if logits is None else logits[:, : self.vocab_size]


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (Zhang & Sennrich, 2019), computed in float32.

    ``forward(x)`` returns the normalised x; ``forward(x, residual)`` first adds the
    residual and returns ``(normalised, new residual)``, saving one pass over memory.
    ``fused`` (set by :meth:`CausalLM.use_fused_kernels`, on CUDA only) runs one Triton
    kernel instead of ~8 small ones.
    """

    def __init__(self, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size), requires_grad=False)
        self.fused = False

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        if self.fused:
            from . import fused

            return fused.rms_norm(x, self.weight, self.eps, residual)
        if residual is None:
            return self._norm(x)
        residual = x + residual
        return self._norm(residual), residual


class SiluAndMul(nn.Module):
    """SwiGLU activation (Shazeer, 2020): ``silu(gate) * up`` on ``[gate | up]``;
    one Triton kernel when ``fused`` (set on CUDA only)."""

    def __init__(self) -> None:
        super().__init__()
        self.fused = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            from . import fused

            return fused.silu_and_mul(x)
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
