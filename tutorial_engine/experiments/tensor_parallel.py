"""What do two GPUs buy a small model? Qwen3-0.6B with ``tensor_parallel_size`` 1 and 2.

For each size: decode-step time at several batch sizes (``batch`` requests of
``--context`` prompt tokens are prefilled, then ``--steps`` engine steps are timed,
median, CUDA graphs and overlap scheduling on), and the throughput of chapter 12's
workload (nano-vLLM's ``bench.py``), both with random weights of the real shapes
(speed does not depend on weight values). Chapter 8 shows the result next to its
communication model.

Usage (on a machine with two GPUs): ``python -m tutorial_engine.experiments.tensor_parallel``
writes ``book/data/tensor_parallel_h200x2.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

import torch

from . import write_json

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "book" / "data" / "tensor_parallel_h200x2.json"


def decode_step_ms(llm, batch: int, context: int, steps: int) -> float:
    """Median wall time of one engine step while ``batch`` requests decode."""
    from .. import SamplingParams

    engine = llm.engine
    params = SamplingParams(temperature=0.6, ignore_eos=True, max_tokens=steps + 8)
    seqs = [engine.make_sequence([(7 * i + j) % 10000 for j in range(context)], params) for i in range(batch)]
    for seq in seqs:
        engine.add_sequence(seq)
    while any(s.num_output_tokens == 0 for s in seqs):  # prefill, and the first tokens
        engine.step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        engine.step()
        times.append(1e3 * (time.perf_counter() - start))
    while engine.has_unfinished():
        engine.step()
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    from .. import LLM
    from ..bench.models import architecture_folder
    from ..bench.environment import environment
    from ..bench.run import run_engine
    from ..bench.workloads import make_requests

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args(argv)
    if torch.cuda.device_count() < 2:
        parser.error("needs two CUDA GPUs")
    model = str(architecture_folder("qwen3-0.6b"))
    options = dict(load_format="dummy", dtype="bfloat16", max_num_seqs=max(args.batch_sizes))
    env = environment(torch.device("cuda")) | {"num_gpus": 2}
    result = {"environment": env, "model": "qwen3-0.6b (dummy weights)", "dtype": "bfloat16",
              "context": args.context, "decode": [{"batch_size": b, "step_ms": {}} for b in args.batch_sizes],
              "throughput": {}}
    for size in (1, 2):
        llm = LLM(model, tensor_parallel_size=size, **options)
        for row in result["decode"]:
            row["step_ms"][str(size)] = decode_step_ms(llm, row["batch_size"], args.context, args.steps)
            print(f"tp={size} batch {row['batch_size']:4d}: {row['step_ms'][str(size)]:.2f} ms/step", flush=True)
        llm.shutdown()
        del llm
        gc.collect()
        write_json(result, args.out)
        run, _ = run_engine(model, make_requests("nanovllm"), dict(load_format="dummy", tensor_parallel_size=size))
        result["throughput"][str(size)] = {key: run[key] for key in ("output_tok_s", "time_s", "cuda_graphs")}
        print(f"tp={size}: {run['output_tok_s']:,.0f} output tok/s", flush=True)
        write_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
