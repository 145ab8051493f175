"""``python -m tutorial_engine.bench.sim_check``: what the host side of the engine
costs, measured on a CPU against a simulated H200 (``tutorial_engine.sim``).

Runs the first ``--num-seqs`` requests of the nano-vLLM workload through ``LLM`` on
``device="sim"`` (Qwen3-0.6B shapes, the benchmark's settings), with overlap
scheduling off and on in alternating rounds, and prints per setting: the simulated
device's busy fraction (busy device time over the run's wall time), output tokens per
second, steps, and the host's CPU time per step (``time.process_time`` of this
process over the run, divided by its steps: scheduling, step plans, token updates and
the simulated executor's token hashing).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass

from ..llm import LLM
from .models import architecture_folder
from .workloads import make_requests

# The settings of the recorded H200 run the timing model was fitted to.
ENGINE_OPTIONS = dict(max_num_seqs=512, max_num_batched_tokens=16384, max_model_len=4096)


@dataclass
class SimRun:
    """One run of the workload on the simulated device.

    Attributes:
        overlap: overlap scheduling on or off.
        wall_s: wall-clock seconds of the ``generate`` call.
        busy_fraction: simulated device busy time / wall time over the run.
        output_tokens, steps: what the run generated and launched.
        host_cpu_s: CPU seconds this process spent in the run.
    """

    overlap: bool
    wall_s: float
    busy_fraction: float
    output_tokens: int
    steps: int
    host_cpu_s: float

    @property
    def output_tok_s(self) -> float:
        return self.output_tokens / self.wall_s

    @property
    def host_cpu_ms_per_step(self) -> float:
        return 1e3 * self.host_cpu_s / self.steps


def run_once(model: str, num_seqs: int, overlap: bool) -> SimRun:
    requests = make_requests("nanovllm").subset(num_seqs)
    with LLM(model, device="sim", overlap_scheduling=overlap, **ENGINE_OPTIONS) as llm:
        device = llm.engine.executor.device
        cpu0, t0 = time.process_time(), time.perf_counter()
        outputs = llm.generate(requests.prompts, requests.sampling_params(), use_tqdm=False)
        t1, cpu1 = time.perf_counter(), time.process_time()
        stats = device.stats(t0, t1)
    return SimRun(overlap, t1 - t0, stats.busy_fraction, sum(len(o["token_ids"]) for o in outputs), stats.steps,
                  cpu1 - cpu0)


def main(argv: list[str] | None = None) -> list[SimRun]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-seqs", type=int, default=64, help="first N requests of the nano-vLLM workload")
    parser.add_argument("--rounds", type=int, default=2, help="alternating off/on rounds")
    args = parser.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        model = str(architecture_folder("qwen3-0.6b", folder))
        for _ in range(args.rounds):
            for overlap in (False, True):
                runs.append(run_once(model, args.num_seqs, overlap))
    print(f"nano-vLLM workload, first {args.num_seqs} requests, Qwen3-0.6B on a simulated NVIDIA H200 "
          "(host: this CPU)")
    print(f"{'overlap':>7} {'busy':>6} {'out tok/s':>10} {'steps':>6} {'host CPU ms/step':>17} {'wall s':>7}")
    for r in runs:
        print(f"{'on' if r.overlap else 'off':>7} {r.busy_fraction:6.1%} {r.output_tok_s:10,.0f} {r.steps:6d} "
              f"{r.host_cpu_ms_per_step:17.3f} {r.wall_s:7.2f}")
    return runs


if __name__ == "__main__":
    main()
