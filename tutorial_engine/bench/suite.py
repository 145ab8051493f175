"""Every GPU measurement the book plots, in one command (each run in its own process,
with its own time limit, so one failure does not lose the others):

    python -m tutorial_engine.bench.suite --output-dir book/data

writes ``bench_*.json`` (headline, peers, ablations) and ``cuda_graphs_h200.json``.
``--only NAME,...`` runs a part; ``--list`` shows the parts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH = [sys.executable, "-m", "tutorial_engine", "bench"]

# name -> (command after the output flag is added, time limit in seconds, output file)
RUNS = {
    "headline": (BENCH + ["--name", "nanovllm"], 150, "bench_nanovllm_h200.json"),
    "cuda_graphs": ([sys.executable, "-m", "tutorial_engine.bench.cuda_graphs"], 150, "cuda_graphs_h200.json"),
    "eager": (BENCH + ["--name", "nanovllm, CUDA graphs off", "--enforce-eager"], 70, "bench_eager_h200.json"),
    "peers": (BENCH + ["--name", "first 32 requests, with transformers peers", "--num-seqs", "32",
                       "--peers", "hf_generate,hf_generate_batch"], 300, "bench_peers_h200.json"),
    # The torch reference attention loops over sequences in Python: a small prefix only.
    "torch_attention": (BENCH + ["--name", "first 4 requests, torch attention", "--num-seqs", "4",
                                 "--attention-backend", "torch"], 90, "bench_torch_attention_h200.json"),
    "subset4": (BENCH + ["--name", "first 4 requests", "--num-seqs", "4"], 30, "bench_subset4_h200.json"),
    "no_chunked_prefill": (BENCH + ["--name", "nanovllm, chunked prefill off", "--no-chunked-prefill"], 150,
                           "bench_no_chunked_prefill_h200.json"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorial_engine.bench.suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="book/data")
    parser.add_argument("--only", default=",".join(RUNS))
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for name, (command, limit, output) in RUNS.items():
            print(f"{name:20s} {limit:4d} s  {output}")
        return 0
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; see --list")
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for name in names:
        command, limit, output = RUNS[name]
        path = out_dir / output
        print(f"=== {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        try:
            rc = subprocess.run(command + ["--output", str(path)], timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        summary.append((name, rc, time.perf_counter() - start, path.is_file()))  # partial JSON survives a timeout
    print("\nrun                  rc       seconds  json")
    for name, rc, seconds, wrote in summary:
        print(f"{name:20s} {rc!s:8s} {seconds:7.1f}  {'yes' if wrote else 'NO'}")
    headline = out_dir / RUNS["headline"][2]
    if headline.is_file():
        result = json.loads(headline.read_text())
        print(f"headline: {result['engine']['output_tok_s']:,.0f} output tok/s")
    return 0 if all(rc == 0 for _, rc, _, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
