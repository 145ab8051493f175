"""Measure what CUDA graphs buy: kernel-launch overhead, and decode step time with
and without graphs over batch sizes. Writes the JSON chapter 6 plots.

    python -m tutorial_engine.bench.cuda_graphs --output book/data/cuda_graphs_h200.json

Needs a CUDA GPU and a graph-safe attention backend (``--attention-backend auto``).
The model is the Qwen3-0.6B architecture with dummy weights unless ``--model PATH``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from .environment import environment


def launch_overhead(num_kernels: int = 2000, repeats: int = 5) -> dict:
    """Microseconds per tiny kernel (``x.add_(1)`` on one element): launched one by
    one from Python, and replayed from a captured graph."""
    x = torch.zeros(1, device="cuda")

    def eager():
        for _ in range(num_kernels):
            x.add_(1)

    graph = torch.cuda.CUDAGraph()
    eager()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph):
            eager()
    torch.cuda.synchronize()

    def timed(fn) -> tuple[float, float]:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        host = time.perf_counter() - t0  # time to enqueue, before waiting for the GPU
        end.synchronize()
        return host * 1e6 / num_kernels, start.elapsed_time(end) * 1e3 / num_kernels

    results = {}
    for name, fn in (("eager", eager), ("graph", graph.replay)):
        fn()
        torch.cuda.synchronize()
        runs = [timed(fn) for _ in range(repeats)]
        results[name] = {"host_us_per_kernel": statistics.median(r[0] for r in runs),
                         "gpu_us_per_kernel": statistics.median(r[1] for r in runs)}
    return {"num_kernels": num_kernels, **results}


class ForwardTimer:
    """Wraps ``ModelRunner.run_model`` to record, per call, the host time to issue
    the forward and its GPU time (CUDA events)."""

    def __init__(self, runner) -> None:
        self.runner, self.calls = runner, []
        self.original = runner.run_model

        def run_model(inputs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            start.record()
            hidden = self.original(inputs)
            end.record()
            self.calls.append((time.perf_counter() - t0, start, end))
            return hidden

        runner.run_model = run_model

    def take(self) -> tuple[list[float], list[float]]:
        """(host ms, GPU ms) of the calls since the last take."""
        torch.cuda.synchronize()
        host = [1e3 * c[0] for c in self.calls]
        gpu = [c[1].elapsed_time(c[2]) for c in self.calls]
        self.calls = []
        return host, gpu


def decode_step_times(llm, batch_sizes: list[int], context: int, steps: int) -> list[dict]:
    """For each batch size: ``batch`` sequences of ``context`` prompt tokens are
    prefilled, then ``steps`` decode steps run with graphs and ``steps`` without
    (alternating in blocks of 5, so drift hits both alike); medians in ms."""
    from .. import SamplingParams

    engine = llm.engine
    runner = engine.executor.runner
    graphs = runner.graphs
    timer = ForwardTimer(runner)
    rows = []
    for batch in batch_sizes:
        params = SamplingParams(temperature=0.6, ignore_eos=True, max_tokens=2 * steps + 4)
        seqs = [engine.make_sequence([(7 * i + j) % 10000 for j in range(context)], params) for i in range(batch)]
        for seq in seqs:
            engine.add_sequence(seq)
        while any(s.num_output_tokens == 0 for s in seqs):  # prefill (and its first token)
            engine.step()
        timer.take()
        samples = {"graph": ([], [], []), "eager": ([], [], [])}
        for block in range(2 * steps // 5):
            mode = "graph" if block % 2 == 0 else "eager"
            runner.graphs = graphs if mode == "graph" else None
            for _ in range(5):
                t0 = time.perf_counter()
                engine.step()
                samples[mode][0].append(1e3 * (time.perf_counter() - t0))
            host, gpu = timer.take()
            samples[mode][1].extend(host)
            samples[mode][2].extend(gpu)
        runner.graphs = graphs
        while engine.has_unfinished():
            engine.step()
        timer.take()
        row = {"batch_size": batch, "context": context}
        for mode, (wall, host, gpu) in samples.items():
            row[f"{mode}_step_ms"] = statistics.median(wall)
            row[f"{mode}_forward_host_ms"] = statistics.median(host)
            row[f"{mode}_forward_gpu_ms"] = statistics.median(gpu)
        rows.append(row)
        print(f"  batch {batch:4d}: step {row['eager_step_ms']:.2f} ms eager, {row['graph_step_ms']:.2f} ms graph; "
              f"forward GPU {row['eager_forward_gpu_ms']:.2f} / {row['graph_forward_gpu_ms']:.2f} ms, "
              f"forward issue {row['eager_forward_host_ms']:.2f} / {row['graph_forward_host_ms']:.2f} ms", flush=True)
    runner.run_model = timer.original
    return rows


def kernel_profile(llm, batch: int, context: int, top: int = 12) -> dict:
    """Kernels in one eager decode step (count and the largest by GPU time), from the torch profiler."""
    from torch.profiler import ProfilerActivity, profile

    from .. import SamplingParams

    engine, runner = llm.engine, llm.engine.executor.runner
    params = SamplingParams(temperature=0.6, ignore_eos=True, max_tokens=8)
    seqs = [engine.make_sequence([(3 * i + j) % 10000 for j in range(context)], params) for i in range(batch)]
    for seq in seqs:
        engine.add_sequence(seq)
    while any(s.num_output_tokens == 0 for s in seqs):
        engine.step()
    graphs, runner.graphs = runner.graphs, None
    engine.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        engine.step()
        torch.cuda.synchronize()
    runner.graphs = graphs
    while engine.has_unfinished():
        engine.step()
    kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    kernels.sort(key=lambda e: e.device_time_total, reverse=True)
    total = sum(e.device_time_total for e in kernels)
    return {
        "batch_size": batch, "context": context,
        "num_kernels": sum(e.count for e in kernels),
        "gpu_time_us": total,
        "top": [{"name": e.key[:80], "count": e.count, "gpu_us": e.device_time_total} for e in kernels[:top]],
    }


def main(argv: list[str] | None = None) -> int:
    from .. import LLM
    from .models import architecture_folder

    parser = argparse.ArgumentParser(prog="python -m tutorial_engine.bench.cuda_graphs", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--architecture", default="qwen3-0.6b")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--context", type=int, default=512, help="prompt tokens per sequence")
    parser.add_argument("--steps", type=int, default=20, help="decode steps per mode and batch size")
    parser.add_argument("--attention-backend", default="auto")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: CUDA graphs need a CUDA GPU", file=sys.stderr)
        return 2
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    model = args.model or str(architecture_folder(args.architecture))
    llm = LLM(model, load_format="auto" if args.model else "dummy", max_num_seqs=max(batch_sizes),
              max_model_len=args.context + 2 * args.steps + 64, attention_backend=args.attention_backend)
    if llm.engine.executor.runner.graphs is None:
        print("error: the engine captured no CUDA graphs (is the attention backend graph-safe?)", file=sys.stderr)
        return 2
    result = {
        "model": args.model or f"{args.architecture} (dummy weights)",
        "dtype": str(llm.engine.dtype).removeprefix("torch."),
        "attention_backend": llm.engine.executor.runner.backend.name,
        "launch_overhead": launch_overhead(),
    }
    print(f"launch overhead: {result['launch_overhead']}", flush=True)
    result["decode"] = decode_step_times(llm, batch_sizes, args.context, args.steps)
    result["kernels_eager_decode_step"] = kernel_profile(llm, max(batch_sizes), args.context)
    print(f"kernels per eager decode step: {result['kernels_eager_decode_step']['num_kernels']}")
    result["environment"] = environment(torch.device("cuda"))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
