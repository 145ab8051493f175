"""``python -m tutorial_engine bench serve``: latency under load, measured like vLLM's
online benchmark (``vllm bench serve``, formerly ``benchmark_serving.py``).

Offline throughput (``bench``) hands the engine every request at once. A server meets
requests one by one, at random times, and its users feel the latency: time to first
token (TTFT) and the pace of the rest. This benchmark starts the server (or targets
``--url``), sends a seeded random workload at a fixed mean *request rate* with
exponential gaps between arrivals (a Poisson process; ``inf`` sends all at once), reads
every answer as a stream, and reports per rate, with vLLM's definitions:

- TTFT: from sending a request to its first streamed chunk;
- TPOT: per request, (latency - TTFT) / (output tokens - 1);
- ITL: the gaps between consecutive chunks, pooled over requests;
- E2EL: from sending to the last chunk;
- throughput: completed requests, output tokens and all tokens per second of the run.

``--policies fcfs,sjf`` starts one server per scheduling policy and runs every rate
against each, so the two admission orders meet the same arrivals.

``--compare-engine-core`` asks what the process split buys: it starts the
single-process server (``serve --engine-core inproc``) and the split one
(``--engine-core process``) side by side and runs each ``--concurrency`` level (that many
streams open at once, a new request as soon as one ends) and each ``--request-rates``
rate (none unless given) against both in alternating rounds. Beside the client's
metrics it reads each server's ``/metrics`` before and after a run: the device's busy
fraction over the run, the engine loop's CPU seconds per step and the API server's CPU
seconds per output token, each from the process's own ``time.process_time`` (with one
process, the two are the same clock). The busy fraction is the simulated device's own
(``--device sim``) or, on a CUDA GPU, NVML's utilization sampled over the run
(``gpu_busy.py``); on a GPU give both servers the same ``--num-kvcache-blocks``, sized
so that two fit on the card.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..serving.cli import add_engine_arguments, engine_argv
from .gpu_busy import GpuBusySampler

if TYPE_CHECKING:  # imported where used, so the command line runs without the serve extra
    import httpx

PERCENTILES = (50, 90, 99)
# The client closes an idle pooled connection after this long, well before a server does
# (uvicorn: 5 s). httpx's default is also 5 s: a connection reused just as the server closes it
# fails with ReadError (the likely cause of one failed request in a 256-stream run).
KEEPALIVE_EXPIRY_S = 1.0
DEFAULT_RATES = [4, 8, 16, 32, math.inf]


@dataclass(frozen=True)
class ServingWorkload:
    """Random prompts (token ids) and output lengths, drawn with ``seed`` (vLLM's
    "random" dataset; ``ignore_eos`` makes every request produce its length).
    ``input_len`` and ``output_len`` are inclusive ranges."""

    num_prompts: int
    input_len: tuple[int, int]
    output_len: tuple[int, int]
    max_token_id: int = 10000
    seed: int = 0

    def draw(self) -> list[tuple[list[int], int]]:
        rng = np.random.default_rng(self.seed)
        lengths = rng.integers(self.input_len[0], self.input_len[1], self.num_prompts, endpoint=True)
        outputs = rng.integers(self.output_len[0], self.output_len[1], self.num_prompts, endpoint=True)
        return [(rng.integers(0, self.max_token_id, n).tolist(), int(m)) for n, m in zip(lengths, outputs)]


@dataclass
class RequestResult:
    """One request as the client saw it; times in seconds."""

    prompt_len: int
    output_len: int = 0
    ttft: float = math.nan
    latency: float = math.nan
    itl: tuple[float, ...] = ()
    error: str | None = None


def arrival_times(num: int, rate: float, seed: int) -> np.ndarray:
    """Send times (s from the start) of a Poisson process of ``rate`` requests/s."""
    if math.isinf(rate):
        return np.zeros(num)
    return np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, num))


async def send(client: httpx.AsyncClient, model: str, prompt: list[int], max_tokens: int) -> RequestResult:
    """Stream one completion; note when each chunk arrives."""
    import httpx

    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    result = RequestResult(len(prompt))
    start = time.perf_counter()
    chunk_times = []
    try:
        async with client.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("choices"):
                    chunk_times.append(time.perf_counter())
                elif chunk.get("usage"):
                    result.output_len = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as err:
        result.error = f"{type(err).__name__}: {err}"
        return result
    if not chunk_times:
        result.error = "no chunks"
        return result
    result.ttft = chunk_times[0] - start
    result.latency = chunk_times[-1] - start
    result.itl = tuple(np.diff(chunk_times).tolist())
    return result


def client_for(url: str, headers: dict) -> httpx.AsyncClient:
    """The benchmark's HTTP client: no client-side queueing (unbounded pool), no timeout, idle
    connections dropped after ``KEEPALIVE_EXPIRY_S``."""
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=KEEPALIVE_EXPIRY_S)
    return httpx.AsyncClient(base_url=url, timeout=None, limits=limits, headers=headers)


async def run_concurrency(url: str, model: str, requests: list[tuple[list[int], int]], concurrency: int,
                          headers: dict) -> tuple[list[RequestResult], float]:
    """Send ``requests`` with ``concurrency`` streams open at once (vLLM's
    ``--max-concurrency`` with every request queued at the start)."""
    slots = asyncio.Semaphore(concurrency)

    async def one(client, prompt, max_tokens):
        async with slots:
            return await send(client, model, prompt, max_tokens)

    async with client_for(url, headers) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(one(client, p, m) for p, m in requests))
        return results, time.perf_counter() - start


async def run_rate(url: str, model: str, requests: list[tuple[list[int], int]], rate: float, seed: int,
                   headers: dict) -> tuple[list[RequestResult], float]:
    """Send ``requests`` at ``rate``; returns their results and the run's duration."""
    async with client_for(url, headers) as client:
        start = time.perf_counter()
        tasks = []
        for (prompt, max_tokens), at in zip(requests, arrival_times(len(requests), rate, seed)):
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            tasks.append(asyncio.create_task(send(client, model, prompt, max_tokens)))
        results = await asyncio.gather(*tasks)
        return results, time.perf_counter() - start


def summarize(results: list[RequestResult], duration: float) -> dict:
    """vLLM's serving metrics: throughputs, and mean and percentiles of TTFT, TPOT,
    ITL and E2EL in milliseconds."""
    done = [r for r in results if r.error is None]
    tpots = [(r.latency - r.ttft) / (r.output_len - 1) for r in done if r.output_len > 1]
    samples = {"ttft": [r.ttft for r in done], "tpot": tpots, "itl": [g for r in done for g in r.itl],
               "e2el": [r.latency for r in done]}
    out = {
        "completed": len(done), "failed": len(results) - len(done), "duration_s": duration,
        "request_throughput": len(done) / duration,
        "output_throughput": sum(r.output_len for r in done) / duration,
        "total_token_throughput": sum(r.output_len + r.prompt_len for r in done) / duration,
    }
    for name, values in samples.items():
        ms = 1e3 * np.asarray(values) if values else None
        out[f"{name}_ms"] = {"mean": float(ms.mean()) if ms is not None else None,
                             **{f"p{q}": float(np.percentile(ms, q)) if ms is not None else None for q in PERCENTILES}}
    # Per request, for plots of TTFT against prompt length: [prompt_len, output_len, ttft_ms, e2el_ms].
    out["requests"] = [[r.prompt_len, r.output_len, round(1e3 * r.ttft, 3), round(1e3 * r.latency, 3)]
                       for r in done]
    out["errors"] = sorted({r.error for r in results if r.error})[:5]
    return out


class LocalServer:
    """``python -m tutorial_engine serve`` in a subprocess on a free loopback port;
    its log goes to a temporary file, shown if it fails to come up."""

    def __init__(self, argv: list[str], startup_timeout: float) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", prefix="serve-", delete=False)
        command = [sys.executable, "-m", "tutorial_engine", "serve", "--port", str(port), "--log-level", "warning",
                   *argv]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.startup_timeout = startup_timeout

    def __enter__(self) -> str:
        import httpx

        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self.url
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        log = Path(self.log.name).read_text()[-3000:]
        self.__exit__()
        raise RuntimeError(f"the server did not come up; its log:\n{log}")

    def __exit__(self, *exc_info) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        os.unlink(self.log.name)


def served_model(url: str, headers: dict) -> str:
    import httpx

    return httpx.get(f"{url}/v1/models", headers=headers, timeout=30).json()["data"][0]["id"]


def bench_policy(url: str, label: str, args: argparse.Namespace, requests: list, headers: dict,
                 on_run) -> None:
    """Warm up, then every rate against the server at ``url``."""
    model = served_model(url, headers)
    asyncio.run(run_rate(url, model, requests[:2], math.inf, 0, headers))  # warm-up (compiles, graphs)
    for rate in args.request_rates:
        results, duration = asyncio.run(run_rate(url, model, requests, rate, args.seed, headers))
        run = {"policy": label, "request_rate": rate if math.isfinite(rate) else "inf", **summarize(results, duration)}
        print_run(run)
        on_run(run)


def print_run(run: dict) -> None:
    t, p, i = run["ttft_ms"], run["tpot_ms"], run["itl_ms"]
    if run["completed"] == 0:
        print(f"  {run['policy']:5s} rate {run['request_rate']}: all {run['failed']} failed, e.g. {run['errors'][0]}")
        return
    print(f"  {run['policy']:5s} rate {str(run['request_rate']):>5s} req/s: {run['request_throughput']:6.2f} req/s, "
          f"{run['output_throughput']:8.0f} out tok/s | TTFT p50 {t['p50']:7.1f} p99 {t['p99']:7.1f} ms | "
          f"TPOT p50 {p['p50'] or 0:6.2f} ms | ITL p99 {i['p99'] or 0:6.2f} ms | failed {run['failed']}", flush=True)


def run_serve_bench(args: argparse.Namespace) -> int:
    from .models import architecture_folder
    from .environment import environment

    import torch

    workload = ServingWorkload(args.num_prompts, args.input_len, args.output_len, args.max_token_id, args.seed)
    requests = workload.draw()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    if args.model is None and args.url is None:
        args.model, args.load_format = str(architecture_folder(args.architecture)), "dummy"
    result = {
        "name": args.name, "command": " ".join(["python -m tutorial_engine", *sys.argv[1:]]),
        "model": args.url or args.model, "workload": asdict(workload),
        "server": {"url": args.url, "argv": None if args.url else engine_argv(args)},
        "environment": environment(torch.device("cuda" if torch.cuda.is_available() else "cpu")),
        "runs": [],
    }

    def on_run(run: dict) -> None:
        result["runs"].append(run)
        if args.output:
            Path(args.output).parent.mkdir(parents=True, exist_ok=True)
            Path(args.output).write_text(json.dumps(result, indent=1) + "\n")

    if args.compare_engine_core:
        if args.url:
            raise ValueError("--compare-engine-core starts its own two servers; drop --url.")
        if args.device != "sim" and (not torch.cuda.is_available() or args.num_kvcache_blocks is None):
            raise ValueError("--compare-engine-core measures the device's busy fraction: run it with --device sim, "
                             "or on a CUDA GPU with --num-kvcache-blocks N (both servers share the card).")
        print(f"single process vs engine core process: {args.prompts_per_stream} requests per stream, prompts "
              f"{workload.input_len}, outputs {workload.output_len} tokens, concurrency {args.concurrency}, "
              f"request rates {args.request_rates or []}")
        compare_engine_cores(args, workload, headers, result, on_run)
        if args.output:
            print(f"  wrote {args.output}", file=sys.stderr)
        return 1 if any(run["failed"] for run in result["runs"]) else 0
    args.request_rates = DEFAULT_RATES if args.request_rates is None else args.request_rates
    print(f"serving benchmark: {workload.num_prompts} requests, prompts {workload.input_len}, "
          f"outputs {workload.output_len} tokens, rates {args.request_rates}")
    if args.url:
        bench_policy(args.url, "server", args, requests, headers, on_run)
    for policy in [] if args.url else args.policies:
        argv = [*engine_argv(args), "--scheduling-policy", policy]
        if args.api_key:
            argv += ["--api-key", args.api_key]
        with LocalServer(argv, args.startup_timeout) as url:
            bench_policy(url, policy, args, requests, headers, on_run)
    if args.output:
        print(f"  wrote {args.output}", file=sys.stderr)
    return 1 if any(run["failed"] for run in result["runs"]) else 0


ENGINE_GAUGES = ("engine_steps", "engine_cpu_seconds", "server_cpu_seconds", "device_busy_seconds")


def engine_counters(url: str, headers: dict) -> dict[str, float]:
    """The engine's and server's own counters from ``/metrics`` (``serving/metrics.py``)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers=headers, timeout=30).text
    values = {family.name.removeprefix("tutorial_engine_"): family.samples[0].value
              for family in text_string_to_metric_families(text) if family.samples}
    return {name: values[name] for name in ENGINE_GAUGES}


def split_run(url: str, engine_core: str, level: dict, send_all, headers: dict) -> dict:
    """One run (``send_all()`` returns its results and duration) with the processes'
    own accounting around it; ``level`` names the concurrency or request rate."""
    before = engine_counters(url, headers)
    on_gpu = math.isnan(before["device_busy_seconds"])  # NaN: a real device, whose busy time NVML samples
    busy = GpuBusySampler() if on_gpu else contextlib.nullcontext()
    with busy:
        results, duration = asyncio.run(send_all())
    time.sleep(0.2)  # the core's last step message (and its counters) reaches the server
    after = engine_counters(url, headers)
    delta = {name: after[name] - before[name] for name in ENGINE_GAUGES}
    run = {"engine_core": engine_core, **level, **summarize(results, duration)}
    output_tokens = sum(r.output_len for r in results if r.error is None)
    run.update(device_busy_fraction=busy.fraction if on_gpu else delta["device_busy_seconds"] / duration,
               engine_steps=int(delta["engine_steps"]),
               engine_cpu_ms_per_step=1e3 * delta["engine_cpu_seconds"] / max(1, delta["engine_steps"]),
               server_cpu_us_per_output_token=1e6 * delta["server_cpu_seconds"] / max(1, output_tokens),
               server_cpu_fraction=delta["server_cpu_seconds"] / duration,
               engine_cpu_fraction=delta["engine_cpu_seconds"] / duration)
    del run["requests"]
    return run


def print_split_run(run: dict) -> None:
    t, i = run["ttft_ms"], run["itl_ms"]
    level = f"x{run['concurrency']}" if "concurrency" in run else f"{run['request_rate']}/s"
    print(f"  {run['engine_core']:7s} {level:>6s} busy {run['device_busy_fraction']:6.1%} "
          f"{run['output_throughput']:7.0f} out tok/s | ITL p50 {i['p50'] or 0:6.1f} p99 {i['p99'] or 0:7.1f} ms | "
          f"TTFT p50 {t['p50'] or 0:7.0f} p99 {t['p99'] or 0:7.0f} ms | engine {run['engine_cpu_ms_per_step']:5.2f} "
          f"CPU ms/step ({run['engine_cpu_fraction']:4.0%}) | server {run['server_cpu_us_per_output_token']:5.0f} "
          f"CPU us/token ({run['server_cpu_fraction']:4.0%}) | failed {run['failed']}", flush=True)


def compare_engine_cores(args: argparse.Namespace, workload: ServingWorkload, headers: dict, result: dict,
                         on_run) -> None:
    """Both servers up at once (an idle one blocks on its queue); each level's rounds
    alternate which goes first."""
    if args.device == "sim":
        result["machine"] = f"this CPU ({result['environment']['cpu']}, {os.cpu_count()} cores) with a simulated NVIDIA H200"
    else:
        result["machine"] = f"{result['environment']['gpu']} ({os.cpu_count()} CPU cores)"
    result["concurrency"], result["request_rates"] = args.concurrency, [str(r) for r in args.request_rates or []]
    with LocalServer([*engine_argv(args), "--engine-core", "inproc"], args.startup_timeout) as inproc_url, \
            LocalServer([*engine_argv(args), "--engine-core", "process"], args.startup_timeout) as process_url:
        urls = {"inproc": inproc_url, "process": process_url}
        model = served_model(process_url, headers)
        for url in urls.values():  # warm-up
            asyncio.run(run_concurrency(url, model, workload.draw()[:4], 4, headers))
        levels = []
        for concurrency in args.concurrency:
            requests = ServingWorkload(args.prompts_per_stream * concurrency, workload.input_len, workload.output_len,
                                       workload.max_token_id, workload.seed).draw()
            levels.append(({"concurrency": concurrency},
                           lambda url, r=requests, c=concurrency: run_concurrency(url, model, r, c, headers)))
        requests = workload.draw()
        for rate in args.request_rates or []:
            levels.append(({"request_rate": rate if math.isfinite(rate) else "inf"},
                           lambda url, r=rate: run_rate(url, model, requests, r, args.seed, headers)))
        for level, send_all in levels:
            for round_ in range(args.rounds):
                order = ("inproc", "process") if round_ % 2 == 0 else ("process", "inproc")
                for engine_core in order:
                    run = split_run(urls[engine_core], engine_core, level, lambda: send_all(urls[engine_core]), headers)
                    run["round"] = round_
                    print_split_run(run)
                    on_run(run)


def _range(text: str) -> tuple[int, int]:
    low, _, high = text.partition(":")
    return int(low), int(high or low)


def _rates(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def add_serve_bench_parser(modes) -> None:
    p = modes.add_parser("serve", help="latency against request rate through the HTTP server (vLLM's "
                                       "benchmark_serving metrics)")
    add_engine_arguments(p)
    p.add_argument("--architecture", default="qwen3-0.6b", help="without --model: this shape, random weights")
    p.add_argument("--url", default=None, help="benchmark a running server instead of starting one")
    p.add_argument("--api-key", default=None)
    p.add_argument("--policies", type=lambda s: [x for x in s.split(",") if x], default=["fcfs", "sjf"],
                   help="scheduling policies to compare, one server each (default: fcfs,sjf)")
    p.add_argument("--request-rates", type=_rates, default=None,
                   help="comma-separated mean request rates per second; inf sends all at once (default: "
                        "4,8,16,32,inf; none with --compare-engine-core)")
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--input-len", type=_range, default=(16, 4096), help="prompt tokens, LOW:HIGH")
    p.add_argument("--output-len", type=_range, default=(32, 512), help="output tokens, LOW:HIGH")
    p.add_argument("--max-token-id", type=int, default=10000, help="prompt token ids are below this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--startup-timeout", type=float, default=900.0)
    p.add_argument("--compare-engine-core", action="store_true",
                   help="single-process vs engine-core-process server at each --concurrency and --request-rates "
                        "(--device sim, or a CUDA GPU with --num-kvcache-blocks)")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",") if x], default=[8, 32, 64, 128, 256],
                   help="with --compare-engine-core: streams open at once, comma-separated")
    p.add_argument("--prompts-per-stream", type=int, default=2,
                   help="with --compare-engine-core: requests per level = this x the concurrency")
    p.add_argument("--rounds", type=int, default=2, help="with --compare-engine-core: alternating rounds per level")
    p.add_argument("--name", default="serving")
    p.add_argument("--output", default=None, help="write the result JSON here")
    p.set_defaults(func=run_serve_bench)
