"""Overlap scheduling measured: the nano-vLLM workload with ``overlap_scheduling`` off
and on, in alternating rounds on one engine (the switch is a property of the loop, so
the same KV cache, CUDA graphs and weights serve both), plus

* the GPU's busy share of the wall time of each run, from the CUDA profiler: the union
  of all kernel and copy intervals over the whole timed run;
* a CPU/GPU timeline of a few consecutive decode steps in each mode (the chapter's
  figure): CPU spans of the loop's parts and GPU busy intervals, same clock.

``python -m tutorial_engine.experiments.overlap --out book/data/overlap_scheduling_h200.json``
(on a GPU; ``--small`` runs a tiny model on a CPU as a smoke test).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from . import triton_version, write_json
from ..bench.models import QWEN3_0_6B_CONFIG, write_config_folder
from ..bench.patching import patched
from ..bench.environment import environment
from ..bench.run import StepProfiler
from ..bench.workloads import Requests, make_requests

DEFAULT_OUT = Path("book/data/overlap_scheduling_h200.json")
TINY = {**QWEN3_0_6B_CONFIG, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 10240}


def timed_run(llm, requests: Requests) -> dict:
    """One pass over ``requests``: output tok/s and the per-step profile."""
    with StepProfiler(llm.engine) as profiler:
        start = time.perf_counter()
        llm.generate(requests.prompts, requests.sampling_params(), use_tqdm=False)
        elapsed = time.perf_counter() - start
    return {"time_s": elapsed, "output_tok_s": requests.num_output_tokens / elapsed, "steps": profiler.summary()}


def gpu_busy_share(llm, requests: Requests, top: int = 25) -> dict:
    """Run ``requests`` under the CUDA profiler; the share of the wall time in which
    any kernel or copy ran (union of intervals, so nothing is counted twice), and the
    ``top`` kernels by total time (where the GPU's time goes)."""
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        llm.generate(requests.prompts, requests.sampling_params(), use_tqdm=False)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    events = [e for e in prof.profiler.kineto_results.events() if e.device_type() == torch.autograd.DeviceType.CUDA]
    spans = sorted((e.start_ns(), e.start_ns() + e.duration_ns()) for e in events)
    by_kernel: dict[str, list[int]] = {}
    for e in events:
        entry = by_kernel.setdefault(e.name()[:80], [0, 0])
        entry[0] += e.duration_ns()
        entry[1] += 1
    kernels = sorted(by_kernel.items(), key=lambda kv: -kv[1][0])[:top]
    busy, end = 0, None
    for s, e in spans:
        if end is None or s > end:
            busy += e - s
            end = e
        elif e > end:
            busy += e - end
            end = e
    return {"wall_s": wall, "gpu_busy_s": busy / 1e9, "gpu_busy_share": busy / 1e9 / wall, "num_gpu_events": len(spans),
            "top_kernels": [{"name": name, "total_s": ns / 1e9, "calls": calls} for name, (ns, calls) in kernels]}


def labelled(targets: list[tuple[object, str, str]]):
    """Wrap each ``obj.name`` in a profiler label ``label`` for the duration."""

    def wrap(original, label):
        def wrapper(*args, **kwargs):
            with record_function(label):
                return original(*args, **kwargs)
        return wrapper

    return patched([(obj, name, wrap(getattr(obj, name), label)) for obj, name, label in targets])


def timeline(llm, requests: Requests, num_steps: int = 4, skip_steps: int = 40) -> dict:
    """CPU spans (schedule, plan, prepare, forward launch, update, wait) and
    GPU busy intervals of ``num_steps`` consecutive decode steps, in microseconds
    from the first step's start."""
    from .. import engine as engine_module
    from ..model_runner import StepResult

    engine, runner = llm.engine, llm.engine.executor.runner
    targets = [(engine, "step", "step"), (engine.scheduler, "schedule", "schedule"),
               (engine_module, "build_step_plan", "plan"), (runner, "prepare", "prepare"),
               (runner, "run_model", "forward"), (engine.scheduler, "update", "update"),
               (StepResult, "token_ids", "wait")]
    with labelled(targets), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        llm.generate(requests.prompts, requests.sampling_params(), use_tqdm=False)
        torch.cuda.synchronize()
    events = prof.profiler.kineto_results.events()
    steps = sorted((e.start_ns(), e.start_ns() + e.duration_ns()) for e in events if e.name() == "step")
    window = steps[skip_steps: skip_steps + num_steps]
    t0, t1 = window[0][0], window[-1][1]
    labels = {t[2] for t in targets}
    cpu = [{"name": e.name(), "start_us": (e.start_ns() - t0) / 1e3, "end_us": (e.start_ns() + e.duration_ns() - t0) / 1e3}
           for e in events if e.name() in labels and e.device_type() == torch.autograd.DeviceType.CPU
           and t0 <= e.start_ns() <= t1]
    gpu = sorted((e.start_ns(), e.start_ns() + e.duration_ns()) for e in events
                 if e.device_type() == torch.autograd.DeviceType.CUDA and t0 <= e.start_ns() <= t1)
    merged: list[list[int]] = []
    for s, e in gpu:  # merge kernels closer than 2 us: the plot shows busy stretches
        if merged and s - merged[-1][1] < 2_000:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return {"cpu": sorted(cpu, key=lambda x: x["start_us"]),
            "gpu_busy": [{"start_us": (s - t0) / 1e3, "end_us": (e - t0) / 1e3} for s, e in merged],
            "steps_us": [{"start_us": (s - t0) / 1e3, "end_us": (e - t0) / 1e3} for s, e in window]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--rounds", type=int, default=3, help="alternating off/on rounds")
    parser.add_argument("--num-seqs", type=int, default=None, help="first N requests of the workload")
    parser.add_argument("--small", action="store_true", help="a tiny model on a CPU: a quick check")
    parser.add_argument("--parts", default="rounds,busy,timeline",
                        help="what to measure: rounds (throughput, off/on), busy (GPU busy share and top "
                             "kernels), timeline (CPU/GPU spans of a few steps)")
    args = parser.parse_args()
    if not args.small and not torch.cuda.is_available():
        raise SystemExit("overlap needs a CUDA GPU (or --small); the book plots the committed JSON instead.")
    from .. import LLM, SamplingParams

    requests = make_requests("nanovllm")
    if args.num_seqs or args.small:
        requests = requests.subset(args.num_seqs or 4)
    config = TINY if args.small else QWEN3_0_6B_CONFIG
    options = dict(max_model_len=4096, max_num_seqs=512, max_num_batched_tokens=16384, load_format="dummy")
    result = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "triton": triton_version(),
              "model": "Qwen3-0.6B shape, random bf16 weights (load_format='dummy')" if not args.small else "tiny",
              "workload": "nano-vLLM bench.py", "num_seqs": len(requests.prompts),
              "output_tokens": requests.num_output_tokens, "rounds": {"off": [], "on": []}}
    with tempfile.TemporaryDirectory() as tmp:
        llm = LLM(str(write_config_folder(tmp, config)), **options)
        engine = llm.engine
        result["environment"] = environment(engine.device)
        result["attention_backend"] = engine.executor.runner.backend.name
        result["cuda_graphs"] = engine.executor.runner.graphs is not None
        llm.generate([list(range(1, 17))], SamplingParams(max_tokens=16), use_tqdm=False)  # warm-up, as bench.py
        parts = args.parts.split(",")
        for _ in range(args.rounds if "rounds" in parts else 0):
            for mode in ("off", "on"):
                engine.overlap_scheduling = mode == "on"
                run = timed_run(llm, requests)
                result["rounds"][mode].append(run)
                s = run["steps"]
                print(f"overlap {mode:3}: {run['output_tok_s']:9,.0f} tok/s; decode step {s['decode_step_ms']:.2f} ms "
                      f"(CPU schedule {s['decode_schedule_ms']:.2f} + plan {s['decode_plan_ms']:.2f} + prepare "
                      f"{s['decode_prepare_ms']:.2f} + update {s['decode_update_ms']:.2f}; waiting "
                      f"{s['decode_wait_ms']:.2f} ms)", flush=True)
                write_json(result, args.out)
        if "rounds" in parts:
            medians = {mode: statistics.median(r["output_tok_s"] for r in runs) for mode, runs in result["rounds"].items()}
            result["median_output_tok_s"] = medians
            result["speedup_on_vs_off"] = medians["on"] / medians["off"]
            print(f"median: off {medians['off']:,.0f}, on {medians['on']:,.0f} tok/s: {result['speedup_on_vs_off']:.3f}x")
        if engine.device.type == "cuda":
            result["gpu_busy"], result["timeline"] = {}, {}
            for mode in ("off", "on") if "busy" in parts else ():
                engine.overlap_scheduling = mode == "on"
                result["gpu_busy"][mode] = gpu_busy_share(llm, requests)
                busy = result["gpu_busy"][mode]
                print(f"overlap {mode}: GPU busy {100 * busy['gpu_busy_share']:.1f}% of the wall; top kernels:", flush=True)
                for kernel in busy["top_kernels"][:12]:
                    print(f"    {kernel['total_s']:7.3f} s {kernel['calls']:8d}x  {kernel['name']}", flush=True)
                write_json(result, args.out)
            small = Requests(requests.workload, requests.prompts[:64], [64] * 64)  # ~70 steps: enough for a window
            for mode in ("off", "on") if "timeline" in parts else ():
                engine.overlap_scheduling = mode == "on"
                result["timeline"][mode] = timeline(llm, small)
            write_json(result, args.out)
        llm.shutdown()
    write_json(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
