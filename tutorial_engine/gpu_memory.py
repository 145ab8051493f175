"""What sizing the KV cache from GPU memory needs: the split of the card's memory and
the worst-case steps to profile (``ModelRunner.profile_memory`` runs them).

The GPU's memory goes to four things: the CUDA context and libraries (outside
PyTorch's allocator), the weights, the activations of the largest step, and the KV
cache, which gets everything that is left of ``gpu_memory_utilization * total``.
The activation peak is measured, not guessed: run the largest step the scheduler can
ever plan on a small temporary cache and read ``torch.cuda.max_memory_allocated``
(vLLM's ``determine_num_available_blocks``; nano-vLLM's warm-up run).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .sampling_params import SamplingParams
from .scheduler import ScheduledSequence, SchedulerOutput
from .sequence import Sequence
from .step_plan import StepPlan, build_step_plan

GiB = 2**30


@dataclass
class MemoryProfile:
    """Where the GPU's memory goes, in bytes.

    Attributes:
        total: the card's memory.
        non_torch: used outside PyTorch's allocator (CUDA context, cuBLAS workspaces,
            other processes).
        weights: the model's parameters and buffers.
        prefill_activations: peak extra memory of a ``max_num_batched_tokens`` prefill step.
        decode_activations: peak extra memory of a ``max_num_seqs`` decode step with
            sampling (logits ``[max_num_seqs, vocab]`` in float32 and the sampler's copies).
        graph_reserve: kept for the CUDA-graph memory pool (0 when graphs are off);
            a decode step's activations bound it.
        kv_cache: what is left for KV-cache pages.
    """

    total: int
    non_torch: int
    weights: int
    prefill_activations: int
    decode_activations: int
    graph_reserve: int
    kv_cache: int

    def as_gib(self) -> dict[str, float]:
        return {name: round(value / GiB, 3) for name, value in asdict(self).items()}


def worst_case_plan(lengths: list[int], block_size: int, first_block: int) -> StepPlan:
    """A prefill of whole prompts of the given lengths in one step, each row sampled
    with top-p (the sampler's sort path), blocks numbered from ``first_block``."""
    params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=1)  # top-p: the sampler's sort path
    out, block = SchedulerOutput(), first_block
    for i, length in enumerate(lengths):
        seq = Sequence(-1 - i, [0] * length, params)
        num_blocks = math.ceil(length / block_size)
        seq.block_table = list(range(block, block + num_blocks))
        block += num_blocks
        out.scheduled.append(ScheduledSequence(seq, length))
    return build_step_plan(out, block_size)
