"""Time to first token with and without prefix caching, for a long shared prefix.

A request = a shared prefix of ``L`` tokens (a long system prompt or document) plus
a short question of its own. Without a cache every request prefills ``L + q``
tokens; with one, the first request (``cold``) does and the following ones
prefill only the question (and the part of the prefix's last block it shares).
For each prefix length and each mode (``none``, ``hash``, ``radix``) the command
sends one cold request, then ``--repeats`` requests with new questions one after
another, and records their TTFT (``LLM.generate``'s ``ttft``: submission to first
token, one request in flight). The SGLang paper (Zheng et al., NeurIPS 2024) and
vLLM's docs report prefix reuse cutting prefill latency by an order of magnitude or
more on long shared prefixes; this measures it on our engine.

Usage: ``python -m tutorial_engine.experiments.prefix_ttft`` on a CUDA GPU writes
``book/data/prefix_caching_ttft.json`` (GPU name, torch/triton versions, date) with
Qwen3-0.6B-shaped random weights (``load_format="dummy"``: time does not depend on
weight values). ``--small`` runs the tiny Qwen3 shape in seconds, also on a CPU.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
from pathlib import Path

import torch

from .. import LLM, SamplingParams
from ..bench.models import write_config_folder
from .chunked_prefill import QWEN3_0_6B, TINY_QWEN3, random_prompt
from . import triton_version, write_json

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "book" / "data" / "prefix_caching_ttft.json"
MODES = ("none", "hash", "radix")


def measure_mode(model_dir: Path, mode: str, prefix_lens: list[int], question_len: int, repeats: int,
                 block_size: int, budget: int) -> list[dict]:
    """TTFT rows for one prefix-caching mode: one engine serves every prefix length."""
    cache_tokens = sum(prefix_lens) + (repeats + 2) * len(prefix_lens) * (question_len + block_size) + 4096
    llm = LLM(str(model_dir), load_format="dummy", prefix_caching=mode, enforce_eager=True, max_num_seqs=8,
              kvcache_block_size=block_size, num_kvcache_blocks=-(-cache_tokens // block_size),
              max_num_batched_tokens=budget, max_model_len=max(prefix_lens) + question_len + 16)
    vocab = llm.engine.spec.vocab_size
    params = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    # Warm-up on other tokens: kernels compile and allocators settle before any timing.
    for n in (min(prefix_lens), 2 * min(prefix_lens)):
        llm.generate([random_prompt(n, vocab, seed=10_000 + n)], params, use_tqdm=False)
    rows = []
    for prefix_len in prefix_lens:
        prefix = random_prompt(prefix_len, vocab, seed=prefix_len)
        questions = [random_prompt(question_len, vocab, seed=prefix_len * 1000 + i) for i in range(repeats + 1)]
        outs = [llm.generate([prefix + q], params, use_tqdm=False)[0] for q in questions]
        warm = [o["ttft"] * 1e3 for o in outs[1:]]
        rows.append({"mode": mode, "attention_backend": llm.engine.executor.runner.backend.name,
                     "prefix_len": prefix_len, "question_len": question_len,
                     "cold_ttft_ms": round(outs[0]["ttft"] * 1e3, 3),
                     "ttft_ms_median": round(statistics.median(warm), 3),
                     "ttft_ms": [round(t, 3) for t in warm],
                     "cached_tokens": [o["num_cached_tokens"] for o in outs[1:]]})
        print(f"{mode:5s} prefix {prefix_len:6d}: cold {rows[-1]['cold_ttft_ms']:9.2f} ms, "
              f"warm median {rows[-1]['ttft_ms_median']:9.2f} ms, cached {rows[-1]['cached_tokens'][0]}", flush=True)
    return rows


def speedups(rows: list[dict]) -> dict[str, dict[int, float]]:
    """Median TTFT without a cache over median TTFT with it, per mode and prefix length."""
    base = {r["prefix_len"]: r["ttft_ms_median"] for r in rows if r["mode"] == "none"}
    return {mode: {r["prefix_len"]: base[r["prefix_len"]] / r["ttft_ms_median"] for r in rows if r["mode"] == mode}
            for mode in MODES[1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument("--small", action="store_true", help="tiny shapes: a quick check that runs on a CPU too")
    parser.add_argument("--repeats", type=int, default=5, help="warm requests per prefix length")
    args = parser.parse_args()
    if not args.small and not torch.cuda.is_available():
        raise SystemExit("prefix_ttft needs a CUDA GPU (or --small); the book plots the committed JSON instead.")
    config = TINY_QWEN3 if args.small else QWEN3_0_6B
    prefix_lens = [256, 512, 1024] if args.small else [1024, 2048, 4096, 8192, 16384, 32768]
    question_len, block_size, budget = 32, 16, 8192
    result = {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton_version(),
        "date": datetime.date.today().isoformat(),
        "model": "tiny Qwen3 shape, random weights" if args.small else "Qwen3-0.6B shape, random weights (load_format='dummy')",
        "dtype": "bfloat16" if torch.cuda.is_available() else "float32",
        "kvcache_block_size": block_size,
        "max_num_batched_tokens": budget,
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_config_folder(tmp, config)
        for mode in MODES:
            result["rows"] += measure_mode(model_dir, mode, prefix_lens, question_len, args.repeats, block_size, budget)
            write_json(result, args.out)  # a run cut short keeps what it measured
    for mode, by_len in speedups(result["rows"]).items():
        print(mode, " ".join(f"{n}: {s:.1f}x" for n, s in by_len.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
