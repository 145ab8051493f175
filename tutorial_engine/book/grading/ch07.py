"""Chapter 7 tasks: the overhead of the CPU in a plain engine loop and what overlap
scheduling wins back.

A step needs ``cpu_ms`` of host work (schedule, build inputs, process results) and
``gpu_ms`` of kernels. The plain loop does them one after the other; the overlapped
loop plans step N+1 while the GPU runs step N, so a step costs the longer of the two
(SGLang's zero-overhead batch scheduler, LMSYS blog, December 2024; vLLM's async
scheduling). The engine's measurement of both loops is in ``book/data``.
"""

from __future__ import annotations

import random

from .task import Task


def step_time_ms(cpu_ms: float, gpu_ms: float, overlap: bool) -> float:
    """Wall time of one engine step: CPU then GPU in the plain loop; the longer of
    the two when the CPU works on the next step while the GPU runs this one."""
    return max(cpu_ms, gpu_ms) if overlap else cpu_ms + gpu_ms


def decode_throughput(batch_size: int, cpu_ms: float, gpu_ms: float, overlap: bool) -> float:
    """Output tokens per second of a decode-only loop: one token per request per step."""
    return batch_size / step_time_ms(cpu_ms, gpu_ms, overlap) * 1000


def overlap_speedup(cpu_ms: float, gpu_ms: float) -> float:
    """Throughput with overlap over throughput without, for the same steps."""
    return step_time_ms(cpu_ms, gpu_ms, False) / step_time_ms(cpu_ms, gpu_ms, True)


def _times(rng: random.Random) -> dict:
    return {"cpu_ms": round(rng.uniform(0.05, 12), 3), "gpu_ms": round(rng.uniform(0.05, 12), 3)}


def _step_case(rng: random.Random) -> dict:
    return {**_times(rng), "overlap": rng.random() < 0.5}


def _throughput_case(rng: random.Random) -> dict:
    return {"batch_size": rng.randint(1, 512), **_step_case(rng)}


step_time = Task(
    "ch07.step_time", step_time_ms, _step_case,
    hint_text="Without overlap the GPU waits for the CPU's plan and the CPU waits for the GPU's tokens: the times "
              "add. With overlap they run at the same time, so the slower one sets the pace.",
    edge_cases=[{"cpu_ms": 2.0, "gpu_ms": 5.5, "overlap": True}, {"cpu_ms": 8.0, "gpu_ms": 4.5, "overlap": True},
                {"cpu_ms": 2.0, "gpu_ms": 5.5, "overlap": False}],
)

throughput = Task(
    "ch07.throughput", decode_throughput, _throughput_case,
    hint_text="Every request in the batch gains one token per step; steps per second are 1000 / step time in ms.",
    edge_cases=[{"batch_size": 256, "cpu_ms": 2.0, "gpu_ms": 5.5, "overlap": False}],
)

speedup = Task(
    "ch07.speedup", overlap_speedup, _times,
    hint_text="Same batch, same kernels: the speed-up is the ratio of the two step times. It is largest when the "
              "CPU and GPU times are equal (2x) and tends to 1 when either dominates.",
    edge_cases=[{"cpu_ms": 3.0, "gpu_ms": 3.0}, {"cpu_ms": 0.1, "gpu_ms": 10.0}],
)

TASKS = [step_time, throughput, speedup]
