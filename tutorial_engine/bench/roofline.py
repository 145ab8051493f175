"""The fastest any engine could run a workload on a given GPU: a roofline bound.

Williams, Waterman & Patterson, "Roofline" (CACM 2009): a kernel's time is at least
its bytes over memory bandwidth and at least its FLOPs over the arithmetic rate.
Applied to a whole workload on a decoder-only model:

* Decode is memory-bound: each step must read every weight once (shared by the whole
  batch) and the K/V of every running sequence's context. The fewest steps possible
  is the longest output (every sequence decodes in the same steps).
* Prefill is compute-bound: ``2 * params`` FLOPs per prompt token in the linear
  layers, plus causal attention (``4 * heads * head_dim`` per query-key pair).

The bound adds the two phases' times (an engine that overlaps prefill with decode
could beat it slightly). The ceilings are measured on the card: a device-to-device
copy for bandwidth and a large bf16 matrix product for the matrix rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..models import DecoderSpec
from .workloads import Requests


@dataclass
class DeviceCeilings:
    """Measured ceilings: bytes/s of a large device copy (read + write counted) and
    FLOP/s of a large bf16 matrix product, each the median of ``repeats`` runs."""

    bandwidth: float
    matmul_flops: float

    def as_dict(self) -> dict:
        return {"bandwidth_TBps": self.bandwidth / 1e12, "matmul_TFLOPs": self.matmul_flops / 1e12}


def _median_ms(fn, repeats: int) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def measure_ceilings(device: torch.device, copy_bytes: int = 2**31, matmul_n: int = 8192, repeats: int = 10) -> DeviceCeilings:
    """Time a ``copy_bytes`` device copy and an ``n x n x n`` bf16 product on ``device`` (a GPU)."""
    src = torch.randn(copy_bytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    copy_ms = _median_ms(lambda: dst.copy_(src), repeats)
    del src, dst
    a = torch.randn(matmul_n, matmul_n, dtype=torch.bfloat16, device=device)
    b = torch.randn(matmul_n, matmul_n, dtype=torch.bfloat16, device=device)
    mm_ms = _median_ms(lambda: a @ b, repeats)
    return DeviceCeilings(bandwidth=2 * copy_bytes / (copy_ms * 1e-3), matmul_flops=2 * matmul_n**3 / (mm_ms * 1e-3))


@dataclass
class Roofline:
    """A workload's unavoidable work and the best time it allows (seconds).

    ``tok_s`` is output tokens over ``time_s``, the bound an engine's measured
    throughput is compared with."""

    weight_bytes: int
    kv_bytes_per_token: int
    decode_steps: int
    decode_weight_bytes: int
    decode_kv_bytes: int
    decode_flops: float
    prefill_flops: float
    decode_time_s: float
    prefill_time_s: float
    time_s: float
    tok_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def matmul_params(spec: DecoderSpec) -> tuple[int, int]:
    """Parameters of one layer's matrices and of the output head (the embedding
    lookup reads only the rows it needs, so it is left out)."""
    q, kv = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    layer = spec.hidden_size * (q + 2 * kv) + q * spec.hidden_size + 3 * spec.hidden_size * spec.intermediate_size
    return layer, spec.vocab_size * spec.hidden_size


def workload_roofline(spec: DecoderSpec, requests: Requests, dtype_bytes: int, ceilings: DeviceCeilings) -> Roofline:
    """The roofline bound of ``requests`` on ``spec`` with weights and KV in ``dtype_bytes``-byte numbers."""
    layer, head = matmul_params(spec)
    linear = spec.num_layers * layer  # FLOPs per token are 2x this
    weight_bytes = (linear + head) * dtype_bytes
    kv_per_token = 2 * spec.num_layers * spec.num_kv_heads * spec.head_dim * dtype_bytes
    attn_flops_per_pair = 4 * spec.num_heads * spec.head_dim * spec.num_layers  # QK^T and PV, 2 FLOPs per MAC

    prompt_lens, outputs = [len(p) for p in requests.prompts], requests.max_tokens
    # The first output token comes from the prefill step; each later one is a decode
    # step whose context is the prompt plus the tokens generated so far.
    decode_tokens = sum(n - 1 for n in outputs)
    decode_context = sum(_range_sum(p + 1, p + n - 1) for p, n in zip(prompt_lens, outputs))
    decode_steps = max(outputs) - 1
    decode_weight_bytes = decode_steps * weight_bytes
    decode_kv_bytes = decode_context * kv_per_token
    decode_flops = 2 * (linear + head) * decode_tokens + attn_flops_per_pair * decode_context
    prefill_flops = (2 * linear * sum(prompt_lens) + 2 * head * len(prompt_lens)
                     + attn_flops_per_pair * sum(p * (p + 1) // 2 for p in prompt_lens))

    decode_time = max((decode_weight_bytes + decode_kv_bytes) / ceilings.bandwidth, decode_flops / ceilings.matmul_flops)
    prefill_time = max(prefill_flops / ceilings.matmul_flops, weight_bytes / ceilings.bandwidth)
    time_s = decode_time + prefill_time
    return Roofline(weight_bytes, kv_per_token, decode_steps, decode_weight_bytes, decode_kv_bytes, decode_flops,
                    prefill_flops, decode_time, prefill_time, time_s, requests.num_output_tokens / time_s)


def _range_sum(low: int, high: int) -> int:
    """low + (low + 1) + ... + high (0 when high < low)."""
    return (low + high) * (high - low + 1) // 2 if high >= low else 0
