"""What fusing Qwen3's q/k norm with RoPE saves, per decode step, on the GPU.

Each Qwen3 attention layer normalises every head of q and k (``q_norm``, ``k_norm``)
and then rotates them (RoPE). Unfused, on the strided q and k views of the qkv
projection, that is six kernels per layer: two copies to contiguous memory, two
RMSNorms, two rotations (seen in the CUDA profile of the benchmark:
``elementwise_kernel`` 57,232 launches, ``_rope_kernel`` 57,792). Fused
(:func:`tutorial_engine.models.fused.qk_norm_rope`) it is one. This command replays
both, 28 times (one decode step of Qwen3-0.6B's 28 layers), from a CUDA graph as the
engine does, at several batch sizes, and checks that they agree.

``python -m tutorial_engine.experiments.qk_norm_rope`` (on a CUDA GPU) writes
``book/data/qk_norm_rope_h200.json`` (``--out`` to change). Times are medians of
``triton.testing.do_bench_cudagraph``.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch
from triton.testing import do_bench_cudagraph

from . import triton_version, write_json
from ..models import fused
from ..models.rotary import RotaryEmbedding

# Qwen3-0.6B's attention: 16 query heads, 8 KV heads, head_dim 128, 28 layers, bf16.
NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, NUM_LAYERS, EPS = 16, 8, 128, 28, 1e-6
DEFAULT_OUT = Path("book/data/qk_norm_rope_h200.json")


def unfused(q, k, positions, cos_sin, q_weight, k_weight):
    """The path before fusion: norm (copying the strided view) then rotate, per tensor."""
    q = fused.rotary(fused.rms_norm(q, q_weight, EPS), positions, cos_sin)
    return q, fused.rotary(fused.rms_norm(k, k_weight, EPS), positions, cos_sin)


def measure(num_tokens: int) -> dict:
    """Microseconds per decode step (28 layers) for both paths at ``num_tokens`` rows."""
    device, dtype = torch.device("cuda"), torch.bfloat16
    qkv = torch.randn(num_tokens, (NUM_HEADS + 2 * NUM_KV_HEADS) * HEAD_DIM, device=device, dtype=dtype)
    q, k, _ = qkv.split([NUM_HEADS * HEAD_DIM, NUM_KV_HEADS * HEAD_DIM, NUM_KV_HEADS * HEAD_DIM], dim=-1)
    q, k = q.view(num_tokens, NUM_HEADS, HEAD_DIM), k.view(num_tokens, NUM_KV_HEADS, HEAD_DIM)
    positions = torch.randint(0, 4096, (num_tokens,), device=device)
    cos_sin = RotaryEmbedding(HEAD_DIM, 4096, 1_000_000.0).to(device).cos_sin_cache
    q_weight, k_weight = (torch.rand(HEAD_DIM, device=device, dtype=dtype) + 0.5 for _ in range(2))
    args = (q, k, positions, cos_sin, q_weight, k_weight)
    ours, reference = fused.qk_norm_rope(*args, EPS), unfused(*args)
    max_diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(ours, reference))

    def step(fn):
        def run():
            for _ in range(NUM_LAYERS):
                fn()
        return run

    fused_us = 1e3 * do_bench_cudagraph(step(lambda: fused.qk_norm_rope(*args, EPS)),
                                        return_mode="median")
    unfused_us = 1e3 * do_bench_cudagraph(step(lambda: unfused(*args)), return_mode="median")
    return {"num_tokens": num_tokens, "fused_us_per_step": fused_us, "unfused_us_per_step": unfused_us,
            "saved_us_per_step": unfused_us - fused_us, "max_abs_diff": max_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--num-tokens", default="1,64,256,512", help="comma-separated batch sizes (decode rows)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("qk_norm_rope needs a CUDA GPU; the book reads the committed JSON instead.")
    result = {"date": datetime.date.today().isoformat(), "gpu": torch.cuda.get_device_name(),
              "torch": torch.__version__, "triton": triton_version(),
              "shape": {"num_heads": NUM_HEADS, "num_kv_heads": NUM_KV_HEADS, "head_dim": HEAD_DIM,
                        "num_layers": NUM_LAYERS, "dtype": "bfloat16"}, "runs": []}
    for n in (int(x) for x in args.num_tokens.split(",")):
        run = measure(n)
        result["runs"].append(run)
        print(f"{n:4d} tokens: unfused {run['unfused_us_per_step']:7.1f} us/step, fused {run['fused_us_per_step']:7.1f}"
              f" us/step, saved {run['saved_us_per_step']:6.1f} us (max |diff| {run['max_abs_diff']:.3g})", flush=True)
        write_json(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
