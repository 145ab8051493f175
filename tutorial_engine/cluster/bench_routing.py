"""``python -m tutorial_engine.cluster.bench_routing``: how routing decides prefix-cache
hits, on two engine replicas (Ray Serve) of the simulated H200 (chapter 11).

Two fixed workloads of tenants, each tenant a system prompt of ``prefix_len`` tokens
followed by a user's own text, sent at a fixed mean rate (Poisson arrivals):

- **many tenants**: ``num_prefixes`` system prompts, users drawn over them with Zipf
  weights ``1 / rank**zipf_exponent``; all prefixes together are 1.5x one replica's KV
  capacity, so one replica cannot cache them all but two can, if each keeps its half;
- **one hot tenant**: the same, with one prefix taking half of all requests, which a
  router that only hashes prefixes to replicas would pin to one replica.

Each workload runs, in ``--rounds`` rounds that alternate their order, against two fresh replicas behind each of three routers: prefix affinity
(``routing.PrefixAffinityPolicy``), Ray Serve's default power-of-two choices, and an
oracle that splits the tenants evenly between the replicas in advance. Reported per
run: the prefix-cache hit rate (cached prompt tokens / prompt tokens, as each request's
usage reports them), requests per replica and max/mean load, TTFT percentiles and
throughput. The simulated device (``tutorial_engine.sim``) times each step as the H200
would and runs no model, so two replicas fit on a laptop's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..bench.environment import environment
from ..bench.models import architecture_folder
from ..bench.serving import arrival_times
from ..config import EngineConfig
from ..sampling_params import SamplingParams
from .routing import ROUTERS

OUT = Path(__file__).resolve().parents[2] / "book" / "data" / "routing_sim.json"


@dataclass(frozen=True)
class TenantWorkload:
    """Requests of tenants sharing system prompts; lengths in tokens, ranges inclusive."""

    name: str
    num_prefixes: int
    prefix_len: int
    zipf_exponent: float
    num_requests: int
    suffix_len: tuple[int, int]
    output_len: tuple[int, int]
    hot_share: float = 0.0  # traffic of tenant 0 on top of the Zipf draw (0: none)
    seed: int = 0

    def tenant_weights(self) -> dict[str, float]:
        """Each tenant's share of the requests."""
        zipf = 1.0 / np.arange(1, self.num_prefixes + 1) ** self.zipf_exponent
        weights = (1 - self.hot_share) * zipf / zipf.sum()
        weights[0] += self.hot_share
        return {f"tenant-{i}": float(w) for i, w in enumerate(weights)}

    def draw(self) -> list[tuple[str, list[int], int]]:
        """(tenant, prompt token ids, output tokens) per request, in arrival order."""
        rng = np.random.default_rng(self.seed)
        prefixes = rng.integers(0, 10000, (self.num_prefixes, self.prefix_len))
        weights = self.tenant_weights()
        tenants = rng.choice(self.num_prefixes, self.num_requests, p=list(weights.values()))
        requests = []
        for t in tenants:
            suffix = rng.integers(0, 10000, rng.integers(self.suffix_len[0], self.suffix_len[1], endpoint=True))
            output = int(rng.integers(self.output_len[0], self.output_len[1], endpoint=True))
            requests.append((f"tenant-{t}", [*prefixes[t].tolist(), *suffix.tolist()], output))
        return requests


def workloads(capacity_tokens: int, num_requests: int) -> list[TenantWorkload]:
    """The two workloads for replicas of ``capacity_tokens``: prefixes totalling 1.5x it."""
    prefix_len = 4096  # a long system prompt (instructions, few-shot examples, documents): ~12 ms of prefill
    num_prefixes = round(1.5 * capacity_tokens / prefix_len)
    common = dict(num_prefixes=num_prefixes, prefix_len=prefix_len, zipf_exponent=0.6, num_requests=num_requests,
                  suffix_len=(32, 96), output_len=(4, 16))
    return [TenantWorkload("many_tenants", **common), TenantWorkload("one_hot_tenant", hot_share=0.5, **common)]


async def run_requests(replicas, requests: list[tuple[str, list[int], int]], rate: float, seed: int) -> dict:
    """Send ``requests`` at ``rate`` per second through ``replicas`` (a ``ReplicaSet``)."""
    ttfts, prompt_tokens, cached_tokens, output_tokens, failed = [], 0, 0, 0, 0

    async def one(tenant, token_ids, max_tokens):
        nonlocal prompt_tokens, cached_tokens, output_tokens, failed
        start = time.perf_counter()
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        first, last = None, None
        try:
            async for out in replicas.add_request(token_ids, params, tenant=tenant):
                first = first or time.perf_counter()
                last = out
        except Exception:
            failed += 1
            return
        ttfts.append(first - start)
        prompt_tokens += last.num_prompt_tokens
        cached_tokens += last.num_cached_tokens
        output_tokens += last.num_output_tokens

    start = time.perf_counter()
    tasks = []
    for (tenant, token_ids, max_tokens), at in zip(requests, arrival_times(len(requests), rate, seed)):
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        tasks.append(asyncio.create_task(one(tenant, token_ids, max_tokens)))
    await asyncio.gather(*tasks)
    duration = time.perf_counter() - start
    ms = 1e3 * np.asarray(ttfts)
    return {"hit_rate": cached_tokens / max(1, prompt_tokens), "completed": len(ttfts), "failed": failed,
            "duration_s": duration, "request_throughput": len(ttfts) / duration,
            "output_throughput": output_tokens / duration,
            "ttft_ms": {"mean": float(ms.mean()), **{f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}}}


def bench(args: argparse.Namespace) -> dict:
    import torch

    from .replica_set import ReplicaSet, deploy
    from .runtime import connect

    connect(num_cpus=os.cpu_count())
    capacity = args.kv_blocks * args.block_size
    config = EngineConfig(model=str(architecture_folder("qwen3-0.6b")), load_format="dummy", device="sim",
                          num_kvcache_blocks=args.kv_blocks, kvcache_block_size=args.block_size,
                          prefix_caching="radix", overlap_scheduling=True)
    result = {"name": "routing_sim", "environment": environment(torch.device("cpu")), "machine":
              f"this CPU ({os.cpu_count()} cores) with {args.replicas} simulated NVIDIA H200 replicas",
              "setup": {"replicas": args.replicas, "kv_capacity_tokens": capacity, "block_size": args.block_size,
                        "request_rate": args.request_rate if math.isfinite(args.request_rate) else "inf"},
              "workloads": {}, "runs": []}
    for workload in [w for w in workloads(capacity, args.num_requests) if w.name in args.workloads]:
        requests = workload.draw()
        result["workloads"][workload.name] = {**asdict(workload), "working_set_tokens":
                                              workload.num_prefixes * workload.prefix_len}
        options = {"prefix_affinity": None, "power_of_two": None,  # affinity: sized from config
                   "oracle": {"tenant_weights": workload.tenant_weights()}}
        for round_, router in ((r, name) for r in range(args.rounds)
                               for name in (ROUTERS if r % 2 == 0 else ROUTERS[::-1])):
            router_options = options[router]
            replicas = ReplicaSet(deploy(config, args.replicas, router, router_options, cpus_per_replica=0.5), config)
            asyncio.run(run_requests(replicas, requests[:8], math.inf, 0))  # warm-up: the path, not the caches
            replicas.requests_per_replica.clear()
            run = asyncio.run(run_requests(replicas, requests, args.request_rate, workload.seed))
            loads = sorted(replicas.requests_per_replica.values(), reverse=True) + [0] * args.replicas
            loads = loads[:args.replicas]
            run = {"workload": workload.name, "router": router, "round": round_, **run,
                   "requests_per_replica": {f"replica-{i}": n for i, n in enumerate(loads)},
                   "load_max_over_mean": max(loads) / max(1e-9, float(np.mean(loads)))}
            replicas.shutdown()
            t = run["ttft_ms"]
            print(f"  {workload.name:14s} {router:15s} hit rate {run['hit_rate']:6.1%}  load max/mean "
                  f"{run['load_max_over_mean']:.2f}  TTFT p50 {t['p50']:6.1f} p99 {t['p99']:7.1f} ms  "
                  f"{run['output_throughput']:7.0f} out tok/s  failed {run['failed']}", flush=True)
            result["runs"].append(run)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--kv-blocks", type=int, default=4096, help="KV pages per replica")
    p.add_argument("--block-size", type=int, default=16, help="tokens per KV page")
    p.add_argument("--num-requests", type=int, default=400)
    p.add_argument("--request-rate", type=float, default=60.0, help="mean requests per second (inf: all at once)")
    p.add_argument("--workloads", type=lambda text: text.split(","), default=["many_tenants", "one_hot_tenant"],
                   help="comma-separated: many_tenants, one_hot_tenant")
    p.add_argument("--rounds", type=int, default=3, help="rounds per workload; each alternates the routers' order")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    result = bench(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if any(run["failed"] for run in result["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
