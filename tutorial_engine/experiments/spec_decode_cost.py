"""What a speculative verify pass costs on the GPU, against a plain decode step.

Speculative decoding (chapter 10) replaces a decode step of one token per sequence by a
*verify* pass that scores ``k`` proposed tokens plus one of the target's own: ``k + 1``
tokens per sequence, an extend step. Decode is memory-bound (each step reads every
weight for one token per row), so scoring more tokens per row costs little more until
the step turns compute-bound; that margin is what speculation spends. This command
times both on the Qwen3-0.6B shape (bf16, random weights) through the engine's own
model runner:

- **decode**: ``B`` sequences, one new token each, replayed from a CUDA graph when the
  batch fits a captured size (as the engine runs it);
- **verify**: the same ``B`` sequences, each its last token and ``k`` proposals: the
  engine's own verify step (an extend step, run eagerly, whose ``k + 1`` logits rows per
  sequence go through the rejection sampler).

Each sequence has ``--context`` tokens of KV before the step. From the two times and an
acceptance rate ``alpha`` it predicts the speed-up of the decode phase: a verify pass
emits ``(1 - alpha^(k+1)) / (1 - alpha)`` tokens per sequence on average (independent
acceptances; Leviathan et al., 2023, section 3.1), a decode step one, so

    speed-up = tokens_per_verify(alpha, k) * decode_ms / verify_ms

(proposal cost left out: n-gram lookup runs on the CPU, overlapped or not). Where it falls
below 1, speculation stops paying.

``python -m tutorial_engine.experiments.spec_decode_cost`` (on a CUDA GPU) writes
``book/data/spec_decode_cost_<card>.json``; times are medians of CUDA-event timings.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from . import write_json
from ..bench.environment import environment
from ..sampling_params import SamplingParams
from ..scheduler import ScheduledSequence, SchedulerOutput
from ..sequence import Sequence
from ..spec_decode.metrics import expected_accepted_length
from ..step_plan import StepPlan, build_step_plan

ALPHAS = (0.5, 0.7, 0.8, 0.9)


def verify_plan(batch: int, context: int, num_draft_tokens: int, block_size: int) -> StepPlan:
    """``batch`` greedy sequences of ``context`` computed tokens, each running its last
    token and ``num_draft_tokens`` proposals (0: a decode step; k: a verify step)."""
    blocks_per_seq = math.ceil((context + 1 + num_draft_tokens) / block_size)
    scheduled = SchedulerOutput()
    for i in range(batch):
        seq = Sequence(i, [1] * (context + 1), SamplingParams(temperature=0, max_tokens=1))
        seq.num_computed_tokens = context
        seq.block_table = list(range(i * blocks_per_seq, (i + 1) * blocks_per_seq))
        scheduled.scheduled.append(ScheduledSequence(seq, 1 + num_draft_tokens, [2] * num_draft_tokens))
    return build_step_plan(scheduled, block_size)


def median_ms(runner, plan: StepPlan, repeats: int) -> float:
    """Median CUDA-event time of ``runner.launch(plan)`` (after two warm-ups)."""
    for _ in range(2):
        runner.launch(plan)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        runner.launch(plan)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", default="1,8,32,128,256")
    parser.add_argument("--num-speculative-tokens", default="1,2,4,8", help="values of k")
    parser.add_argument("--context", type=int, default=512, help="KV tokens per sequence before the step")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("spec_decode_cost needs a CUDA GPU; the book reads the committed JSON instead.")
    from .. import LLM
    from ..bench.models import architecture_folder

    batches = [int(x) for x in args.batch_sizes.split(",")]
    ks = [int(x) for x in args.num_speculative_tokens.split(",")]
    env = environment(torch.device("cuda"))
    card = env["gpu"].split()[1].lower() if env["gpu"] else "gpu"
    out = args.out or Path(f"book/data/spec_decode_cost_{card}.json")
    max_len = args.context + max(ks) + 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = architecture_folder("qwen3-0.6b", Path(tmp))
        block_size = 16
        num_blocks = max(batches) * math.ceil(max_len / block_size)
        with LLM(str(folder), load_format="dummy", max_model_len=max_len, max_num_seqs=max(batches),
                 max_num_batched_tokens=max(batches) * (max(ks) + 1), kvcache_block_size=block_size,
                 num_kvcache_blocks=num_blocks) as llm:
            runner = llm.engine.executor.runner
            result = {"environment": env, "model": "Qwen3-0.6B shape, random bf16 weights",
                      "context_tokens": args.context, "attention_backend": runner.backend.name,
                      "fused_kernels": sorted(runner.fused_kernels), "alphas": list(ALPHAS), "runs": []}
            for batch in batches:
                decode_ms = median_ms(runner, verify_plan(batch, args.context, 0, block_size), args.repeats)
                for k in ks:
                    verify_ms = median_ms(runner, verify_plan(batch, args.context, k, block_size), args.repeats)
                    speedups = {str(a): expected_accepted_length(a, k) * decode_ms / verify_ms for a in ALPHAS}
                    result["runs"].append({"batch": batch, "k": k, "decode_ms": decode_ms, "verify_ms": verify_ms,
                                           "verify_over_decode": verify_ms / decode_ms,
                                           "predicted_speedup": speedups})
                    print(f"B={batch:3d} k={k}: decode {decode_ms:6.2f} ms, verify {verify_ms:6.2f} ms "
                          f"({verify_ms / decode_ms:4.2f}x); speed-up at alpha 0.7: {speedups['0.7']:.2f}",
                          flush=True)
                write_json(result, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
