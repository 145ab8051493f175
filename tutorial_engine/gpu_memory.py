"""Size the KV cache from GPU memory by profiling a worst-case step.

The GPU's memory goes to four things: the CUDA context and libraries (outside
PyTorch's allocator), the weights, the activations of the largest step, and the KV
cache, which gets everything that is left of ``gpu_memory_utilization * total``.
The activation peak is measured, not guessed: run the largest step the scheduler can
ever plan on a small temporary cache and read ``torch.cuda.max_memory_allocated``
(vLLM's ``determine_num_available_blocks``; nano-vLLM's warm-up run).
"""

from __future__ import annotations

import gc
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from .sampling_params import SamplingParams
from .scheduler import ScheduledSequence, SchedulerOutput
from .sequence import Sequence
from .step_plan import StepPlan, build_step_plan

if TYPE_CHECKING:
    from .model_runner import ModelRunner

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


def _fake_step(runner: ModelRunner, lengths: list[int], first_block: int) -> StepPlan:
    """A scheduled prefill of sequences with the given prompt lengths, whole
    prompts in one step, pages numbered from ``first_block``."""
    params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=1)  # top-p: the sampler's sort path
    out, block = SchedulerOutput(), first_block
    for i, length in enumerate(lengths):
        seq = Sequence(-1 - i, [0] * length, params)
        num_blocks = math.ceil(length / runner.block_size)
        seq.block_table = list(range(block, block + num_blocks))
        block += num_blocks
        out.scheduled.append(ScheduledSequence(seq, length))
    return build_step_plan(out, runner.block_size)


def _peak_extra_bytes(runner: ModelRunner, step: StepPlan) -> int:
    torch.cuda.synchronize(runner.device)
    torch.cuda.reset_peak_memory_stats(runner.device)
    base = torch.cuda.memory_allocated(runner.device)
    runner.launch(step)
    torch.cuda.synchronize(runner.device)
    return torch.cuda.max_memory_allocated(runner.device) - base


def profile_memory(runner: ModelRunner, max_model_len: int, bytes_per_block: int, with_graphs: bool) -> MemoryProfile:
    """Measure a worst-case step and split ``gpu_memory_utilization`` of the card.

    The prefill probe is ``max_num_batched_tokens`` tokens as sequences of
    ``min(max_model_len, max_num_batched_tokens)`` tokens (long sequences are the
    worst case for attention); the decode probe is ``max_num_seqs`` one-token
    sequences, each sampled with top-p. Both run on a temporary cache that is freed
    afterwards; the runner ends with no KV cache.

    Raises:
        ValueError: when nothing is left for the KV cache.
    """
    config, device = runner.config, runner.device
    gc.collect()  # engines dropped but not yet collected would still count as used memory
    torch.cuda.empty_cache()
    seq_len = min(max_model_len, config.max_num_batched_tokens)
    num_seqs = max(1, min(config.max_num_seqs, config.max_num_batched_tokens // seq_len))
    prefill_blocks = num_seqs * math.ceil(seq_len / runner.block_size)
    runner.allocate_kv_cache(prefill_blocks + config.max_num_seqs)
    try:
        prefill = _peak_extra_bytes(runner, _fake_step(runner, [seq_len] * num_seqs, 0))
        decode = _peak_extra_bytes(runner, _fake_step(runner, [1] * config.max_num_seqs, prefill_blocks))
    finally:
        runner.free_kv_cache()
        torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    non_torch = total - free - torch.cuda.memory_reserved(device)
    weights = torch.cuda.memory_allocated(device)
    graph_reserve = decode if with_graphs else 0
    kv_cache = int(total * config.gpu_memory_utilization) - non_torch - weights - max(prefill, decode) - graph_reserve
    profile = MemoryProfile(total, non_torch, weights, prefill, decode, graph_reserve, kv_cache)
    if kv_cache < bytes_per_block:
        raise ValueError(
            f"no GPU memory is left for the KV cache: {profile.as_gib()} GiB (gpu_memory_utilization="
            f"{config.gpu_memory_utilization}); raise gpu_memory_utilization, lower max_num_batched_tokens "
            "or max_num_seqs, or use a smaller model / dtype."
        )
    return profile
