"""The ``bench`` subcommand's arguments. Kept apart from the benchmark code, which is
imported only when the command runs, so ``generate`` and ``serve`` never load it."""

from __future__ import annotations

import argparse
from pathlib import Path

from .peers import PEERS
from .serving import add_serve_bench_parser
from .workloads import WORKLOADS

def _run_bench(args: argparse.Namespace) -> int:
    from .run import run_bench_command

    return run_bench_command(args)


def add_bench_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="throughput benchmark (nano-vLLM's bench.py workload by default)")
    p.add_argument("--workload", default="nanovllm", choices=sorted(WORKLOADS))
    p.add_argument("--num-seqs", type=int, default=None, help="run only the first N requests of the workload")
    p.add_argument("--model", default=None, help="checkpoint folder (default: --architecture with dummy weights)")
    p.add_argument("--architecture", default="qwen3-0.6b")
    p.add_argument("--name", default=None, help="result name stored in the JSON")
    p.add_argument("--output", default=None, help="write the result JSON here")
    p.add_argument("--peers", type=lambda s: [x for x in s.split(",") if x], default=[],
                   help=f"comma-separated peers to run on the same requests: {','.join(PEERS)}")
    # Engine settings: nano-vLLM's bench.py uses max_model_len=4096 and its defaults
    # max_num_seqs=512, max_num_batched_tokens=16384, gpu_memory_utilization=0.9.
    p.add_argument("--max-model-len", type=int, default=None,
                   help="default: 4096 (as nano-vLLM's bench.py), capped by the model's max_position_embeddings")
    p.add_argument("--max-num-seqs", type=int, default=512)
    p.add_argument("--max-num-batched-tokens", type=int, default=16384)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--num-kvcache-blocks", type=int, default=None)
    p.add_argument("--enforce-eager", action="store_true", help="CUDA graphs off")
    p.add_argument("--attention-backend", default="auto")
    p.add_argument("--fused-kernels", default="verified", choices=("verified", "all", "none"),
                   help="which fused Triton kernels run: the GPU-verified ones, all, or none")
    p.add_argument("--no-chunked-prefill", action="store_true")
    p.add_argument("--no-overlap", action="store_true", help="the plain loop (overlap scheduling off)")
    p.add_argument("--prefix-caching", default="none")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--nanovllm-path", type=Path, default=None,
                   help="nano-vLLM checkout for --peers nanovllm (default: ../shared/peers/nano-vllm)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds with --peers nanovllm")
    p.set_defaults(func=_run_bench)
    add_serve_bench_parser(p.add_subparsers(dest="bench_mode", title="modes"))  # bench serve: online latency
