"""How close does the Triton paged decode kernel get to the GPU's memory bandwidth?

Decode attention reads every cached K/V byte once per step and does ~1 multiply-add
per byte, so its speed limit is memory bandwidth. This command measures:

1. the card's device-to-device copy bandwidth (bytes read + written / time), the
   practical ceiling (METHOD: measure the ceiling, don't trust the datasheet);
2. the decode kernel on the Qwen3-0.6B attention shape (16 query heads, 8 KV heads,
   head_dim 128, bf16), batch 256 at 1k and 4k context: achieved bandwidth =
   bytes of K/V read / kernel time, and its fraction of the copy bandwidth;
3. a sweep of the kernel's knobs (tile size, warps, pipeline stages, splits) that chose
   the defaults in ``triton_backend.py``, contexts 256..8k, and small batches at 4k
   where split-K (Flash-Decoding) matters, also replayed from CUDA graphs (no launch cost);
4. the prefill kernel against PyTorch's SDPA (flash) on plain causal prompts, and its tiles.

Usage (on a CUDA GPU): ``python -m tutorial_engine.experiments.decode_bandwidth``
writes ``book/data/paged_attention_h200.json`` (``--out`` to change) with the GPU name,
torch/triton versions and the date. Times are medians of ``triton.testing.do_bench``.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
from pathlib import Path

import torch
import triton
import torch.nn.functional as F
from triton.testing import do_bench

from ..attention import triton_backend
from ..attention.testing import random_paged_batch
from ..attention.triton_decode import paged_decode
from ..attention.triton_prefill import paged_prefill

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, DTYPE = 16, 8, 128, torch.bfloat16  # Qwen3-0.6B attention
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "book" / "data" / "paged_attention_h200.json"


def median_ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def copy_bandwidth_gbs(num_bytes: int = 4 * 2**30) -> float:
    """Device-to-device copy of ``num_bytes``: (read + write) bytes / time, in GB/s."""
    src = torch.empty(num_bytes, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    return 2 * num_bytes / median_ms(lambda: dst.copy_(src)) / 1e6


def decode_case(batch: int, context: int, block_size: int = 16) -> dict:
    """A decode batch of ``batch`` sequences at ``context`` tokens and its K/V bytes."""
    b = random_paged_batch([1] * batch, [context] * batch, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, block_size,
                           dtype=DTYPE, device="cuda", seed=context + batch)
    kv_bytes = 2 * batch * context * NUM_KV_HEADS * HEAD_DIM * DTYPE.itemsize
    return {"batch": b, "kv_bytes": kv_bytes}


def time_decode(case: dict, **knobs) -> float:
    b = case["batch"]
    return median_ms(lambda: paged_decode(b.query, b.k_cache, b.v_cache, b.meta.block_tables, b.meta.seq_lens,
                                          b.scale, **knobs))


def time_decode_graph(case: dict, **knobs) -> float:
    """The same, replayed from a CUDA graph: no Python launch cost, as in the engine's decode steps."""
    b = case["batch"]

    def run() -> torch.Tensor:
        return paged_decode(b.query, b.k_cache, b.v_cache, b.meta.block_tables, b.meta.seq_lens, b.scale, **knobs)

    run()  # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return median_ms(graph.replay)


def default_knobs(batch: int, context: int) -> dict:
    """The knobs ``triton_backend.paged_attention`` uses for this shape."""
    return dict(num_splits=triton_backend.num_kv_splits(batch, NUM_KV_HEADS, context, torch.device("cuda")),
                block_n=triton_backend.DECODE_BLOCK_N, num_warps=triton_backend.DECODE_NUM_WARPS,
                num_stages=triton_backend.DECODE_NUM_STAGES)


def row(batch: int, context: int, block_size: int, knobs: dict, ms: float, kv_bytes: int, copy_gbs: float,
        graph_ms: float | None = None) -> dict:
    """One measurement; ``graph_*`` fields (when timed) come from CUDA-graph replay."""
    gbs = kv_bytes / ms / 1e6
    out = {"batch": batch, "context": context, "block_size": block_size, **knobs, "time_us": round(ms * 1e3, 2),
           "kv_bytes": kv_bytes, "bandwidth_gbs": round(gbs, 1), "fraction_of_copy": round(gbs / copy_gbs, 3)}
    if graph_ms is not None:
        out.update(graph_time_us=round(graph_ms * 1e3, 2), graph_bandwidth_gbs=round(kv_bytes / graph_ms / 1e6, 1))
    return out


def sweep(copy_gbs: float) -> list[dict]:
    rows = []
    for context in (1024, 4096):
        case = decode_case(256, context)
        for block_n, warps, stages, splits in itertools.product((32, 64, 128), (2, 4, 8), (2, 3), (1, 2)):
            knobs = dict(num_splits=splits, block_n=block_n, num_warps=warps, num_stages=stages)
            rows.append(row(256, context, 16, knobs, time_decode(case, **knobs), case["kv_bytes"], copy_gbs))
        del case
    return rows


def prefill_vs_sdpa(num_prompts: int = 16, prompt_len: int = 1024) -> dict:
    """Plain causal prompts (no cached prefix): paged Triton prefill vs SDPA on dense tensors."""
    b = random_paged_batch([prompt_len] * num_prompts, [prompt_len] * num_prompts, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM,
                           16, dtype=DTYPE, device="cuda")
    triton_backend.store_kvcache(b.key, b.value, b.k_cache, b.v_cache, b.meta.slot_mapping)
    m = b.meta
    paged = median_ms(lambda: paged_prefill(b.query, b.k_cache, b.v_cache, m.block_tables, m.seq_lens,
                                            m.query_start_loc, m.max_query_len, b.scale))
    q = b.query.view(num_prompts, prompt_len, NUM_HEADS, HEAD_DIM).transpose(1, 2)
    k = b.key.view(num_prompts, prompt_len, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2)
    v = b.value.view(num_prompts, prompt_len, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2)
    sdpa = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=b.scale, enable_gqa=True))
    flops = 4 * num_prompts * NUM_HEADS * HEAD_DIM * prompt_len * (prompt_len + 1) / 2  # causal half, QK^T and PV
    return {"num_prompts": num_prompts, "prompt_len": prompt_len, "triton_paged_us": round(paged * 1e3, 1),
            "sdpa_dense_us": round(sdpa * 1e3, 1), "triton_tflops": round(flops / paged / 1e9, 1),
            "sdpa_tflops": round(flops / sdpa / 1e9, 1)}


def prefill_sweep(num_prompts: int = 16, prompt_len: int = 1024) -> list[dict]:
    """Tile shapes of the paged prefill kernel on plain prompts (TFLOP/s, causal half counted)."""
    b = random_paged_batch([prompt_len] * num_prompts, [prompt_len] * num_prompts, NUM_HEADS, NUM_KV_HEADS, HEAD_DIM,
                           16, dtype=DTYPE, device="cuda")
    m = b.meta
    flops = 4 * num_prompts * NUM_HEADS * HEAD_DIM * prompt_len * (prompt_len + 1) / 2
    rows = []
    for block_m, block_n, warps, stages in itertools.product((64, 128), (32, 64), (4, 8), (2, 3)):
        ms = median_ms(lambda: paged_prefill(b.query, b.k_cache, b.v_cache, m.block_tables, m.seq_lens,
                                             m.query_start_loc, m.max_query_len, b.scale, block_m=block_m,
                                             block_n=block_n, num_warps=warps, num_stages=stages))
        rows.append({"block_m": block_m, "block_n": block_n, "num_warps": warps, "num_stages": stages,
                     "time_us": round(ms * 1e3, 1), "tflops": round(flops / ms / 1e9, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument("--no-sweep", action="store_true", help="skip the tuning sweep")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("decode_bandwidth needs a CUDA GPU; the book plots the committed JSON instead.")

    copy_gbs = copy_bandwidth_gbs()
    print(f"copy bandwidth {copy_gbs:.0f} GB/s")
    headline = []
    for context in (1024, 4096):
        for block_size in (16, 256):
            case = decode_case(256, context, block_size)
            knobs = default_knobs(256, context)
            headline.append(row(256, context, block_size, knobs, time_decode(case, **knobs), case["kv_bytes"], copy_gbs))
            del case
    by_context = []
    for context in (256, 512, 1024, 2048, 4096, 8192):
        case = decode_case(256, context)
        knobs = default_knobs(256, context)
        by_context.append(row(256, context, 16, knobs, time_decode(case, **knobs), case["kv_bytes"], copy_gbs,
                              time_decode_graph(case, **knobs)))
        del case
    by_batch = []  # split-K (Flash-Decoding) at 4k context: every split count, the default marked
    for batch in (1, 4, 16, 64, 256):
        case = decode_case(batch, 4096)
        default = default_knobs(batch, 4096)
        for splits in (1, 2, 4, 8, 16):
            knobs = {**default, "num_splits": splits}
            by_batch.append({**row(batch, 4096, 16, knobs, time_decode(case, **knobs), case["kv_bytes"], copy_gbs,
                                   time_decode_graph(case, **knobs)),
                             "is_default": splits == default["num_splits"]})
        del case
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "date": datetime.date.today().isoformat(),
        "shape": {"num_heads": NUM_HEADS, "num_kv_heads": NUM_KV_HEADS, "head_dim": HEAD_DIM, "dtype": "bfloat16"},
        "copy_bandwidth_gbs": round(copy_gbs, 1),
        "headline": headline,
        "by_context": by_context,
        "by_batch": by_batch,
        "prefill": prefill_vs_sdpa(),
        "sweep": [] if args.no_sweep else sweep(copy_gbs),
        "prefill_sweep": [] if args.no_sweep else prefill_sweep(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in headline + [r for r in by_batch if r["is_default"]]:
        print(f"batch {r['batch']:4d} ctx {r['context']:5d} page {r['block_size']:3d} splits {r['num_splits']:2d}: "
              f"{r['time_us']:8.1f} us {r['bandwidth_gbs']:7.0f} GB/s ({100 * r['fraction_of_copy']:.0f}% of copy)"
              + (f", graph {r['graph_time_us']:.1f} us" if "graph_time_us" in r else ""))
    print("prefill", result["prefill"])
    if result["sweep"]:
        for context in (1024, 4096):
            best = sorted((r for r in result["sweep"] if r["context"] == context), key=lambda r: r["time_us"])[:5]
            for r in best:
                print(f"sweep ctx {context}: block_n {r['block_n']} warps {r['num_warps']} stages {r['num_stages']} "
                      f"splits {r['num_splits']}: {r['time_us']:.1f} us {r['bandwidth_gbs']:.0f} GB/s")
    for r in sorted(result["prefill_sweep"], key=lambda r: r["time_us"])[:4]:
        print("prefill sweep", r)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
