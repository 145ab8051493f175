"""``python -m tutorial_engine bench``: throughput of a named workload, with peers,
a roofline bound and the engine's per-step profile, printed and written as JSON.

Throughput follows nano-vLLM's ``bench.py``: one short warm-up generation, then
the whole workload in one ``generate`` call; output tokens (the sum of requested
lengths; every request runs to its length with ``ignore_eos``) over wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .environment import environment
from .peers import PEERS
from .patching import patched
from .workloads import Requests, make_requests



class StepProfiler:
    """Times each engine step and its CPU-side parts by wrapping the engine's methods
    (restored on exit).

    Parts: ``schedule`` (the scheduler's plan), ``plan`` (flattening it into a
    :class:`StepPlan`), ``prepare`` (copying the plan to the device and launching
    nothing yet), ``update`` (appending tokens, finishing requests) and ``wait`` (the
    CPU blocked on a step's sampled tokens). In the plain loop the GPU idles during
    the first four; the overlapped loop runs them while the GPU runs the previous
    step, so a step's wall time approaches its GPU time."""

    PARTS = ("schedule", "plan", "prepare", "update")

    def __init__(self, engine) -> None:
        from .. import engine as engine_module
        from ..model_runner import StepResult

        self.engine = engine
        self.steps: list[dict] = []
        self._targets = [(engine, "step"), (engine.scheduler, "schedule"), (engine_module, "build_step_plan"),
                         (engine.executor.runner, "prepare"), (engine.scheduler, "update_from_output"), (StepResult, "token_ids")]
        self._names = ["step", "schedule", "plan", "prepare", "update", "wait"]

    def __enter__(self) -> StepProfiler:
        engine, metrics = self.engine, self.engine.metrics

        def step():
            record = {part: 0.0 for part in (*self.PARTS, "wait")}
            record["num_seqs"] = 0
            self._current = record
            prefill, decode = metrics.num_prefill_tokens, metrics.num_decode_tokens
            start = time.perf_counter()
            finished = self._originals["step"]()
            record["wall"] = time.perf_counter() - start
            record["prefill_tokens"] = metrics.num_prefill_tokens - prefill
            record["decode_tokens"] = metrics.num_decode_tokens - decode
            self.steps.append(record)
            return finished

        def timed(part):
            original = self._originals[part]

            def wrapper(*args, **kwargs):
                start = time.perf_counter()
                result = original(*args, **kwargs)
                self._current[part] += time.perf_counter() - start
                if part == "schedule":
                    self._current["num_seqs"] = len(result.scheduled)
                return result
            return wrapper

        self._originals = {part: getattr(obj, name) for part, (obj, name) in zip(self._names, self._targets)}
        self._patch = patched([(engine, "step", step)] + [
            (obj, name, timed(part)) for part, (obj, name) in zip(self._names[1:], self._targets[1:])])
        self._patch.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._patch.__exit__(*exc)

    def summary(self) -> dict:
        """Totals and means (milliseconds) over decode-only and prefill-carrying steps."""
        decode = [s for s in self.steps if s["prefill_tokens"] == 0]
        prefill = [s for s in self.steps if s["prefill_tokens"] > 0]

        def mean_ms(steps, key):
            return 1e3 * float(np.mean([s[key] for s in steps])) if steps else None

        out = {
            "num_steps": len(self.steps),
            "num_decode_steps": len(decode),
            "num_prefill_steps": len(prefill),
            "decode_step_ms": mean_ms(decode, "wall"),
            "prefill_step_ms": mean_ms(prefill, "wall"),
            "decode_batch_size_mean": float(np.mean([s["num_seqs"] for s in decode])) if decode else None,
            "prefill_tok_s": _rate(prefill, "prefill_tokens"),
            "decode_tok_s": _rate(decode, "decode_tokens"),
        }
        for part in (*self.PARTS, "wait"):
            out[f"decode_{part}_ms"] = mean_ms(decode, part)
        cpu = sum(s[p] for s in self.steps for p in self.PARTS)
        out["cpu_share_of_wall"] = cpu / sum(s["wall"] for s in self.steps)
        return out

    def series(self) -> dict:
        """Per-step lists for plots: batch size, wall ms, CPU ms, prefill tokens."""
        return {
            "num_seqs": [s["num_seqs"] for s in self.steps],
            "wall_ms": [round(1e3 * s["wall"], 4) for s in self.steps],
            "cpu_ms": [round(1e3 * sum(s[p] for p in self.PARTS), 4) for s in self.steps],
            "prefill_tokens": [s["prefill_tokens"] for s in self.steps],
        }


def _rate(steps: list[dict], key: str) -> float | None:
    seconds = sum(s["wall"] for s in steps)
    return sum(s[key] for s in steps) / seconds if seconds else None


def engine_options(args: argparse.Namespace, dummy: bool) -> dict:
    """LLM(...) keyword arguments from the command line."""
    options = dict(
        max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, gpu_memory_utilization=args.gpu_memory_utilization,
        enforce_eager=args.enforce_eager, attention_backend=args.attention_backend,
        fused_kernels=args.fused_kernels, enable_chunked_prefill=not args.no_chunked_prefill, prefix_caching=args.prefix_caching,
        overlap_scheduling=False if args.no_overlap else None,
        device=args.device, dtype=args.dtype, load_format="dummy" if dummy else "auto",
    )
    if args.num_kvcache_blocks:
        options["num_kvcache_blocks"] = args.num_kvcache_blocks
    return options


def run_engine(model_path: str, requests: Requests, options: dict, temperature: float | None = None) -> tuple[dict, list]:
    """Build an engine, warm it up, run ``requests`` once; returns (result, outputs).

    Raises:
        RuntimeError: when a request did not produce exactly its requested length.
    """
    from .. import LLM, SamplingParams
    from ..metrics import summarize_latency

    llm = LLM(model_path, **options)
    engine = llm.engine
    runner = engine.executor.runner
    device = engine.device
    llm.generate([list(range(1, 17))], SamplingParams(max_tokens=16), use_tqdm=False)  # warm-up, as bench.py
    before = engine.metrics.as_dict()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    with StepProfiler(engine) as profiler:
        start = time.perf_counter()
        outputs = llm.generate(requests.prompts, requests.sampling_params(temperature), use_tqdm=False)
        elapsed = time.perf_counter() - start
    wrong = [i for i, (o, n) in enumerate(zip(outputs, requests.max_tokens)) if len(o["token_ids"]) != n]
    if wrong:
        raise RuntimeError(f"requests {wrong[:5]} did not generate their max_tokens although ignore_eos is set")
    after = engine.metrics.as_dict()
    counters = {k: after[k] - before[k] for k in after if isinstance(after[k], int)}
    result = {
        "time_s": elapsed,
        "output_tok_s": requests.num_output_tokens / elapsed,
        "total_tok_s": (requests.num_output_tokens + requests.num_prompt_tokens) / elapsed,
        "latency_s": summarize_latency(outputs),
        "steps": profiler.summary(),
        "step_series": profiler.series(),
        "counters": counters,
        "attention_backend": runner.backend.name,
        "fused_kernels": sorted(runner.fused_kernels),
        "cuda_graphs": runner.graphs is not None,
        "cuda_graph_batch_sizes": runner.graphs.batch_sizes if runner.graphs else [],
        "kv_cache": {"num_blocks": engine.num_kvcache_blocks, "block_size": engine.config.kvcache_block_size,
                     "capacity_tokens": engine.num_kvcache_blocks * engine.config.kvcache_block_size},
        "memory_profile_gib": runner.memory_profile.as_gib() if runner.memory_profile else None,
        "overlap_scheduling": engine.overlap_scheduling,
        "config": {k: v for k, v in dataclasses.asdict(engine.config).items() if k != "model"},
        "dtype": str(engine.dtype).removeprefix("torch."),
        "device": str(device),
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        result["reserved_gpu_memory_gib"] = torch.cuda.memory_reserved(device) / 2**30
    llm.shutdown()
    del llm, engine, runner
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result, outputs


def run_peers(model_path: str, dummy: bool, requests: Requests, peers: list[str], device: torch.device,
              dtype: torch.dtype, on_result=lambda name, result: None) -> dict:
    """Each peer's result, or ``{"error": ...}`` when it fails (recorded, not fatal);
    ``on_result`` sees each one as soon as it is measured."""
    from . import peers as peer_module

    results = {}
    model = peer_module.load_hf_model(model_path, dummy, device, dtype)
    for name in peers:
        try:
            results[name] = getattr(peer_module, name)(model, requests)
        except Exception as err:  # a peer's API drift must not lose our own numbers
            logging.exception("peer %s failed", name)
            results[name] = {"error": f"{type(err).__name__}: {err}"}
        on_result(name, results[name])
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return results


def bench(args: argparse.Namespace, save=lambda result: None) -> dict:
    """Run the benchmark the command line describes; returns the JSON-ready result.

    ``save`` is called with the result so far after the engine's run and after each
    peer, so a run stopped by a time limit keeps what it measured."""
    from ..loader import decoder_spec, load_hf_config
    from .models import architecture_folder
    from .roofline import measure_ceilings, workload_roofline

    requests = make_requests(args.workload)
    if args.num_seqs:
        requests = requests.subset(args.num_seqs)
    dummy = args.model is None
    model_path = args.model or str(architecture_folder(args.architecture))
    spec = decoder_spec(load_hf_config(model_path))
    if args.max_model_len is None:
        args.max_model_len = min(4096, spec.max_position_embeddings)
    options = engine_options(args, dummy)
    engine_result, _ = run_engine(model_path, requests, options)
    device = torch.device(engine_result["device"])
    result = {
        "name": args.name or args.workload,
        "workload": dataclasses.asdict(requests.workload),
        "num_seqs": len(requests.prompts),
        "prompt_tokens": requests.num_prompt_tokens,
        "output_tokens": requests.num_output_tokens,
        "model": args.model or f"{args.architecture} (config.json only, load_format='dummy')",
        "engine": engine_result,
        "environment": environment(device),
    }
    if device.type == "cuda":
        ceilings = measure_ceilings(device)
        itemsize = getattr(torch, engine_result["dtype"]).itemsize
        roofline = workload_roofline(spec, requests, itemsize, ceilings)
        result["ceilings"] = ceilings.as_dict()
        result["roofline"] = roofline.as_dict()
        result["roofline_fraction"] = engine_result["output_tok_s"] / roofline.tok_s
    print_summary(result)
    save(result)
    if args.peers and device.type == "cuda":
        result["peers"], result["speedup_vs_peers"] = {}, {}

        def on_result(name: str, peer: dict) -> None:
            result["peers"][name] = peer
            if "output_tok_s" in peer:
                result["speedup_vs_peers"][name] = engine_result["output_tok_s"] / peer["output_tok_s"]
            print_peer(name, peer, result["speedup_vs_peers"].get(name))
            save(result)

        run_peers(model_path, dummy, requests, args.peers, device, getattr(torch, engine_result["dtype"]), on_result)
    return result


ENGINE_FLAGS = ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "gpu_memory_utilization",
                "attention_backend", "fused_kernels", "prefix_caching")


def compare_with_nanovllm(args: argparse.Namespace, save) -> dict:
    """Our engine and nano-vLLM in alternating processes on one checkpoint (see
    :mod:`tutorial_engine.bench.nanovllm`), with the workload's roofline."""
    import tempfile

    from ..loader import decoder_spec, load_hf_config
    from . import nanovllm
    from .models import ARCHITECTURES
    from .roofline import measure_ceilings, workload_roofline

    path = args.nanovllm_path or nanovllm.DEFAULT_NANOVLLM
    if not (path / "nanovllm").is_dir():
        raise FileNotFoundError(f"{path} is not a nano-vLLM checkout; pass --nanovllm-path.")
    flags = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in ENGINE_FLAGS
             if getattr(args, name) is not None]
    flags += [flag for flag, on in (("--enforce-eager", args.enforce_eager), ("--no-overlap", args.no_overlap),
                                    ("--no-chunked-prefill", args.no_chunked_prefill)) if on]
    requests = make_requests(args.workload)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else nanovllm.write_random_checkpoint(
            Path(tmp) / args.architecture, ARCHITECTURES[args.architecture])
        spec = decoder_spec(load_hf_config(model))
        result = {"name": args.name or f"{args.workload} vs nano-vLLM", "workload": dataclasses.asdict(requests.workload),
                  "output_tokens": requests.num_output_tokens,
                  "model": args.model or f"{args.architecture}, random bf16 weights (written by the benchmark)",
                  "environment": environment(torch.device("cuda"))}
        ceilings = measure_ceilings(torch.device("cuda"))
        result["ceilings"] = ceilings.as_dict()
        result["roofline"] = workload_roofline(spec, requests, 2, ceilings).as_dict()

        def on_progress(comparison: dict) -> None:
            result["comparison"] = comparison
            if comparison.get("ours_summary"):
                result["roofline_fraction"] = comparison["ours_summary"]["median"] / result["roofline"]["tok_s"]
            save(result)

        on_progress(nanovllm.compare(model, path, args.rounds, flags, on_progress))
    return result


def print_summary(result: dict) -> None:
    e = result["engine"]
    print(f"workload {result['name']}: {result['num_seqs']} seqs, {result['prompt_tokens']} prompt tokens, "
          f"{result['output_tokens']} output tokens")
    print(f"  engine ({e['attention_backend']} attention, CUDA graphs {'on' if e['cuda_graphs'] else 'off'}): "
          f"{e['time_s']:.2f} s, {e['output_tok_s']:,.0f} output tok/s "
          f"(prefill {e['steps']['prefill_tok_s'] or 0:,.0f} tok/s, decode {e['steps']['decode_tok_s'] or 0:,.0f} tok/s)")
    s = e["steps"]
    if s["decode_step_ms"] is not None:
        print(f"  decode steps: {s['num_decode_steps']}, {s['decode_step_ms']:.2f} ms each "
              f"(CPU: schedule {s['decode_schedule_ms']:.2f}, plan {s['decode_plan_ms']:.2f}, prepare "
              f"{s['decode_prepare_ms']:.2f}, update {s['decode_update_ms']:.2f}; waiting for the GPU "
              f"{s['decode_wait_ms']:.2f} ms); mean batch {s['decode_batch_size_mean']:.0f}")
    lat = e["latency_s"]
    print(f"  TTFT p50 {lat['ttft_p50'] * 1e3:.0f} ms, p99 {lat['ttft_p99'] * 1e3:.0f} ms; "
          f"TPOT mean {lat['tpot_mean'] * 1e3:.2f} ms; KV {e['kv_cache']['num_blocks']} blocks "
          f"({e['kv_cache']['capacity_tokens']:,} tokens)")
    if "roofline" in result:
        print(f"  roofline {result['roofline']['tok_s']:,.0f} tok/s on {result['environment']['gpu']} "
              f"({result['ceilings']['bandwidth_TBps']:.2f} TB/s, {result['ceilings']['matmul_TFLOPs']:.0f} TFLOP/s): "
              f"{100 * result['roofline_fraction']:.1f}% of it")
    sys.stdout.flush()


def print_peer(name: str, peer: dict, speedup: float | None) -> None:
    if "error" in peer:
        print(f"  {name}: failed: {peer['error']}", flush=True)
    else:
        print(f"  {name}: {peer['time_s']:.2f} s, {peer['output_tok_s']:,.0f} tok/s (engine is {speedup:.1f}x)", flush=True)


def run_bench_command(args: argparse.Namespace) -> int:
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown:
        raise ValueError(f"unknown peers {unknown}; choose from {PEERS}")
    def save(result: dict) -> None:
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(result, indent=1) + "\n")

    if "nanovllm" in args.peers:
        if args.peers != ["nanovllm"]:
            raise ValueError("--peers nanovllm runs alone (each engine in its own process); run the "
                             "transformers peers in a separate command.")
        compare_with_nanovllm(args, save)
    else:
        bench(args, save)
    if args.output:
        print(f"  wrote {args.output}", file=sys.stderr)
    return 0
