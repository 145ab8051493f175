"""Runs step plans on one device: the model, its KV cache pages, the decode CUDA
graphs and the sampler live here, and nowhere else.

Set-up happens in the constructor, in the order that memory requires: build the model
with its weights, size the KV cache (profile a worst-case step on a GPU, see
``gpu_memory.py``), allocate it, capture the decode graphs. Then :meth:`execute` runs
one :class:`~tutorial_engine.step_plan.StepPlan` per engine step and returns without
waiting for the device: the sampled tokens stay on the GPU (the next step can read its
inputs from them) and a copy to pinned host memory is on its way (:class:`StepResult`).

With tensor parallelism (chapter 8) every rank runs its own runner on its own device,
with its shard of the weights and of the KV cache (its KV heads), and all of them
execute the same plans in the same order.
"""

from __future__ import annotations

import gc
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from .attention import AttentionMetadata, get_attention_backend
from .config import EngineConfig
from .cuda_graph import CUDAGraphDecoder, graphs_unavailable_reason
from .distributed import broadcast_from_rank0, building_rank, min_over_ranks
from .gpu_memory import MemoryProfile, worst_case_plan
from .loader import load_weights
from .models import CausalLM, DecoderSpec
from .models.kernel_registry import select_fused_kernels
from .sampler import Sampler
from .spec_decode.rejection import RejectionSampler
from .step_plan import StepPlan
from .transfer import to_device

logger = logging.getLogger(__name__)


@dataclass
class StepInputs:
    """Device tensors of one step: ``input_ids``/``positions`` int64 ``[T]``, the
    attention metadata, and ``logits_indices`` int64 ``[n]`` (rows to sample)."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    logits_indices: torch.Tensor


@dataclass
class StepResult:
    """The tokens one step sampled, on their way to the CPU.

    Attributes:
        sampled: int64 ``[S]`` on the device, one token per sampling row of the plan;
            for a verify step (speculative decoding) ``[S, K + 1]``: each row's
            emitted tokens (accepted proposals, then the target's own), padded with -1.
        host: the same in pinned host memory, filled by an asynchronous copy.
        copied: CUDA event recorded after that copy (None on a CPU, where it is done).
    """

    sampled: torch.Tensor
    host: torch.Tensor
    copied: torch.cuda.Event | None

    @classmethod
    def start_copy(cls, sampled: torch.Tensor) -> StepResult:
        if sampled.device.type == "cpu":
            return cls(sampled, sampled, None)
        host = torch.empty(sampled.shape, dtype=sampled.dtype, pin_memory=True)
        host.copy_(sampled, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        return cls(sampled, host, copied)

    def token_ids(self) -> list[int] | list[list[int]]:
        """Wait for the copy (only this step's, not later queued work) and return the
        tokens: one per sampling row, or for a verify step each row's emitted tokens."""
        if self.copied is not None:
            self.copied.synchronize()
        if self.host.dim() == 2:
            return [[token for token in row if token >= 0] for row in self.host.tolist()]
        return self.host.tolist()


class ModelRunner:
    """Owns the model, its KV cache, the decode CUDA graphs and the sampler on one device.

    Args:
        config: engine configuration (``num_kvcache_blocks`` or the memory budget,
            ``attention_backend``, ``enforce_eager``, ``load_format``, ``seed``).
        spec: the decoder's shape.
        device, dtype: where and in which precision the model runs.
        max_model_len: longest sequence (prompt + output) in tokens; sizes the
            memory profile and the block-table width of the captured graphs.
        tp_rank: this runner's tensor-parallel rank (of ``config.tensor_parallel_size``);
            with more than one rank the process group must be initialised already.

    Raises:
        ValueError: when no memory is left for the KV cache.
    """

    def __init__(self, config: EngineConfig, spec: DecoderSpec, device: torch.device, dtype: torch.dtype,
                 max_model_len: int, tp_rank: int = 0) -> None:
        self.config = config
        self.spec = spec
        self.device = device
        self.tp_rank, self.tp_size = tp_rank, config.tensor_parallel_size
        self.block_size = config.kvcache_block_size
        self.max_model_len = max_model_len
        self.model = build_model(spec, config, device, dtype, tp_rank)
        self.fused_kernels = select_fused_kernels(config.fused_kernels, device)
        self.model.use_fused_kernels(self.fused_kernels)
        self.backend = get_attention_backend(config.attention_backend, device, config.kvcache_block_size, dtype)
        for layer in self.model.attention_layers():
            layer.backend = self.backend
        self.sampler = Sampler(device, config.seed)
        self.rejection_sampler = RejectionSampler(self.sampler)
        self.kv_cache: torch.Tensor | None = None
        self.graphs: CUDAGraphDecoder | None = None
        self.memory_profile: MemoryProfile | None = None
        self.previous_sampled = torch.zeros(0, dtype=torch.int64, device=device)
        self.allocate_kv_cache(config.num_kvcache_blocks or self._auto_num_blocks())
        self.capture_cuda_graphs()

    # -- memory -----------------------------------------------------------------------

    @property
    def num_kvcache_blocks(self) -> int:
        return self.kv_cache.shape[2] if self.kv_cache is not None else 0

    def _auto_num_blocks(self) -> int:
        """KV pages from the memory budget: on a CPU ``cpu_kvcache_space_gib`` (but no
        more than every sequence at full length needs); on a GPU what
        ``gpu_memory_utilization`` of the card leaves after the weights and a profiled
        worst-case step (see ``gpu_memory.py``). Per rank: a page holds this rank's KV
        heads, and every rank takes the fewest pages any rank can hold, since the
        scheduler hands out one page number for all of them."""
        config = self.config
        per_block = kv_cache_bytes_per_block(self.spec, self.block_size, next(self.model.parameters()).dtype,
                                             self.model.attention_layers()[0].num_kv_heads)
        if self.device.type == "cuda":
            with_graphs = graphs_unavailable_reason(config, self.device, self.backend) is None
            self.memory_profile = self.profile_memory(per_block, with_graphs)
            logger.info("GPU memory (GiB): %s", self.memory_profile.as_gib())
            budget = self.memory_profile.kv_cache
        else:
            budget = config.cpu_kvcache_space_gib * 2**30
        full = config.max_num_seqs * math.ceil(self.max_model_len / self.block_size)
        num_blocks = min(int(budget // per_block), full)
        if self.tp_size > 1:
            num_blocks = min_over_ranks(num_blocks, self.device)
        if num_blocks < 1:
            knob = "gpu_memory_utilization" if self.device.type == "cuda" else "cpu_kvcache_space_gib"
            raise ValueError(f"no memory is left for the KV cache after loading the model; raise {knob} "
                             "or use a smaller model / dtype.")
        return num_blocks

    def _peak_extra_bytes(self, plan: StepPlan) -> int:
        """Memory a step allocates beyond what is already held, at its peak."""
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        self.launch(plan)
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device) - base

    def profile_memory(self, bytes_per_block: int, with_graphs: bool) -> MemoryProfile:
        """Measure a worst-case step and split ``gpu_memory_utilization`` of the card.

        The prefill probe is ``max_num_batched_tokens`` tokens as sequences of
        ``min(max_model_len, max_num_batched_tokens)`` tokens (long sequences are the
        worst case for attention); the decode probe is ``max_num_seqs`` one-token
        sequences, each sampled with top-p. Both run on a temporary cache that is freed
        afterwards; the runner ends with no KV cache (see ``gpu_memory.py``).

        Raises:
            ValueError: when nothing is left for the KV cache.
        """
        config, device, max_model_len = self.config, self.device, self.max_model_len
        gc.collect()  # engines dropped but not yet collected would still count as used memory
        torch.cuda.empty_cache()
        seq_len = min(max_model_len, config.max_num_batched_tokens)
        num_seqs = max(1, min(config.max_num_seqs, config.max_num_batched_tokens // seq_len))
        prefill_blocks = num_seqs * math.ceil(seq_len / self.block_size)
        self.allocate_kv_cache(prefill_blocks + config.max_num_seqs)
        try:
            prefill = self._peak_extra_bytes(worst_case_plan([seq_len] * num_seqs, self.block_size, 0))
            decode = self._peak_extra_bytes(worst_case_plan([1] * config.max_num_seqs, self.block_size, prefill_blocks))
        finally:
            self.free_kv_cache()
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

    def allocate_kv_cache(self, num_blocks: int) -> None:
        """Allocate ``num_blocks`` pages per layer and point every attention layer at them."""
        self.free_kv_cache()
        self.kv_cache = allocate_kv_cache(self.model, num_blocks, self.block_size, self.device)
        logger.info("attention backend %s, %d KV blocks of %d tokens", self.backend.name, num_blocks, self.block_size)

    def free_kv_cache(self) -> None:
        """Drop the cache (and any graphs bound to its addresses)."""
        self.graphs = None
        for layer in self.model.attention_layers():
            layer.k_cache = layer.v_cache = torch.empty(0)
        self.kv_cache = None

    @torch.inference_mode()
    def capture_cuda_graphs(self) -> None:
        """Capture decode steps for a set of batch sizes, unless ``enforce_eager``,
        a CPU device or a backend that is not graph-safe rules it out (logged)."""
        reason = graphs_unavailable_reason(self.config, self.device, self.backend)
        if reason is not None:
            logger.info("CUDA graphs off: %s", reason)
            return
        max_blocks = -(-self.max_model_len // self.block_size)
        self.graphs = CUDAGraphDecoder(self.model, self.config.max_num_seqs, max_blocks, self.max_model_len, self.device)
        logger.info("captured decode CUDA graphs for batch sizes %s", self.graphs.batch_sizes)

    def shutdown(self) -> None:
        """Give the device memory back: graphs, KV cache, weights."""
        self.free_kv_cache()
        self.model = None
        self.previous_sampled = None
        gc.collect()  # each weight's loader is a bound method of its layer: a reference cycle
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- one step ---------------------------------------------------------------------

    def prepare(self, plan: StepPlan) -> StepInputs:
        """Copy the plan's arrays to the device (asynchronously from pinned memory) and
        fill its placeholder inputs from the previous step's sampled tokens, on the
        device, so the CPU never waits for them."""
        input_ids = self._to_device(plan.input_ids)
        if len(plan.placeholder_index):
            if self.previous_sampled.dim() != 1:
                raise RuntimeError("a plan reads a placeholder from a verify step's tokens; a speculating step's "
                                   "tokens must reach the CPU before the next plan (in_flight.py).")
            input_ids[self._to_device(plan.placeholder_index)] = self.previous_sampled[self._to_device(plan.input_rows)]
        query_lens = np.diff(plan.query_start_loc)
        meta = AttentionMetadata(
            slot_mapping=self._to_device(plan.slot_mapping),
            query_start_loc=self._to_device(plan.query_start_loc),
            seq_lens=self._to_device(plan.seq_lens),
            block_tables=self._to_device(plan.block_tables),
            max_query_len=int(query_lens.max()),
            max_seq_len=int(plan.seq_lens.max()),
            query_start_loc_cpu=plan.query_start_loc.tolist(),
            seq_lens_cpu=plan.seq_lens.tolist(),
        )
        return StepInputs(input_ids, self._to_device(plan.positions), meta, self._to_device(plan.logits_indices))

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return to_device(array, self.device)

    @torch.inference_mode()
    def run_model(self, inputs: StepInputs) -> torch.Tensor:
        """Hidden states ``[T, hidden]``: a graph replay for decode-only steps that
        fit a captured batch size, an eager forward otherwise."""
        if self.graphs is not None and self.graphs.can_run(inputs.meta):
            return self.graphs.run(inputs.input_ids, inputs.positions, inputs.meta)
        return self.model(inputs.input_ids, inputs.positions, inputs.meta)

    @torch.inference_mode()
    def execute(self, plan: StepPlan) -> StepResult:
        """Launch one step; returns at once with its sampled tokens on the way to the host."""
        return StepResult.start_copy(self.launch(plan))

    def launch(self, plan: StepPlan) -> torch.Tensor:
        """Queue one step on the device; returns its sampled tokens, int64 ``[S]`` on the
        device (tensor-parallel workers stop here: only rank 0 reads tokens)."""
        for seq_id in plan.finished_seq_ids:
            self.sampler.forget(seq_id)
        inputs = self.prepare(plan)
        hidden = self.run_model(inputs)
        self.previous_sampled = self.sample(hidden, inputs.logits_indices, plan)
        return self.previous_sampled

    def sample(self, hidden: torch.Tensor, logits_indices: torch.Tensor,
               plan: StepPlan) -> torch.Tensor:
        """The next token of each sampling row: int64 ``[S]``, identical on every rank;
        for a step that verifies proposals, each row's emitted tokens, int64 ``[S, K + 1]``
        padded with -1 (:class:`~tutorial_engine.spec_decode.RejectionSampler`).

        With tensor parallelism rank 0 alone samples (it gathered the logits) and
        broadcasts the tokens: every rank must hold the same ``previous_sampled``,
        because the next plan's placeholder inputs are filled from it on each device.
        The broadcast makes them identical by construction, for S * 8 bytes a step,
        where sampling on every rank would rely on bitwise-identical logits, kernels
        and random generator states in every process.
        """
        n = logits_indices.numel()
        if n == 0:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        if n != hidden.shape[0]:  # decode steps sample every row
            hidden = hidden[logits_indices]
        logits = self.model.compute_logits(hidden)  # None on ranks other than 0
        if self.tp_rank == 0 and plan.speculates:
            sampled = self.rejection_sampler(logits, plan.num_draft_tokens, self._to_device(plan.draft_token_ids),
                                             plan.sampling).token_ids
        elif self.tp_rank == 0:
            sampled = self.sampler(logits, plan.sampling)
        elif plan.speculates:
            sampled = torch.empty((len(plan.num_draft_tokens), int(plan.num_draft_tokens.max()) + 1),
                                  dtype=torch.int64, device=self.device)
        else:
            sampled = torch.empty(n, dtype=torch.int64, device=self.device)
        if self.tp_size > 1:
            broadcast_from_rank0(sampled)
        return sampled


def build_model(spec: DecoderSpec, config: EngineConfig, device: torch.device, dtype: torch.dtype,
                tp_rank: int = 0) -> CausalLM:
    """Create the model (shard ``tp_rank`` of ``config.tensor_parallel_size``) directly on
    ``device`` in ``dtype`` and fill its weights, from the checkpoint or
    (``load_format="dummy"``) with seeded random values (each rank draws its own
    shard: right for speed, not the unsharded model's values)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), building_rank(tp_rank, config.tensor_parallel_size):
            model = CausalLM(spec)
    finally:
        torch.set_default_dtype(previous)
    if config.load_format == "dummy":
        init_dummy_weights(model, config.seed)
    else:
        load_weights(model, config.model)
    return model.eval()


def init_dummy_weights(model: CausalLM, seed: int) -> None:
    """Random weights (normal, std 0.02; norms at 1) for speed tests without a checkpoint."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.data.fill_(1.0)
        else:
            param.data.copy_(torch.randn(param.shape, generator=generator) * 0.02)


def kv_cache_bytes_per_block(spec: DecoderSpec, block_size: int, dtype: torch.dtype, num_kv_heads: int) -> int:
    """Bytes one page takes across all layers: K and V, ``block_size`` tokens each."""
    return 2 * spec.num_layers * block_size * num_kv_heads * spec.head_dim * dtype.itemsize


def allocate_kv_cache(model: CausalLM, num_blocks: int, block_size: int, device: torch.device) -> torch.Tensor:
    """One tensor ``[2, layers, num_blocks, block_size, kv_heads, head_dim]``; each
    attention layer gets views of its K and V slices."""
    layers = model.attention_layers()
    dtype = next(model.parameters()).dtype
    kv = torch.zeros(2, len(layers), num_blocks, block_size, layers[0].num_kv_heads, layers[0].head_dim,
                     dtype=dtype, device=device)
    for i, layer in enumerate(layers):
        layer.k_cache, layer.v_cache = kv[0, i], kv[1, i]
    return kv
