"""Runs one scheduled step on the device: builds the flat batch, runs the model
(eagerly, or by replaying a captured CUDA graph for decode steps), samples.
Planning (the scheduler) stays on the CPU side, so a later chapter can overlap the
next step's planning with this step's forward pass."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
import torch

from .attention import AttentionMetadata, get_attention_backend
from .config import EngineConfig
from .cuda_graph import CUDAGraphDecoder, graphs_unavailable_reason
from .models import CausalLM, DecoderSpec
from .sampler import Sampler
from .scheduler import SchedulerOutput

logger = logging.getLogger(__name__)


@dataclass
class StepInputs:
    """Device tensors of one step: ``input_ids``/``positions`` int64 ``[T]``, the
    attention metadata, and ``logits_indices`` int64 ``[n]`` (rows to sample)."""

    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    logits_indices: torch.Tensor


class ModelRunner:
    """Owns the model, its KV cache pages, the decode CUDA graphs and the sampler on one device.

    Life cycle: construct, then :meth:`allocate_kv_cache` (its size may come from
    profiling steps on a temporary cache first, see ``gpu_memory.py``), then
    :meth:`capture_cuda_graphs`, then :meth:`execute` once per engine step.

    Args:
        config: engine configuration.
        model: a loaded :class:`CausalLM` on ``device``.
        max_model_len: longest sequence (prompt + output) in tokens; sizes the
            block-table width of the captured graphs.
    """

    def __init__(self, config: EngineConfig, model: CausalLM, device: torch.device, max_model_len: int) -> None:
        self.config = config
        self.model = model
        self.spec: DecoderSpec = model.spec
        self.device = device
        self.block_size = config.kvcache_block_size
        self.max_model_len = max_model_len
        self.backend = get_attention_backend(config.attention_backend, device)
        self.sampler = Sampler(device, config.seed)
        self.kv_cache: torch.Tensor | None = None
        self.graphs: CUDAGraphDecoder | None = None
        for layer in model.attention_layers():
            layer.backend = self.backend

    # -- memory -----------------------------------------------------------------------

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

    # -- one step ---------------------------------------------------------------------

    def prepare(self, out: SchedulerOutput) -> StepInputs:
        """Flatten the scheduled sequences into one varlen batch (see AttentionMetadata).

        Per-sequence Python work is kept to reading a few attributes; positions and
        slots are computed for all tokens at once with numpy, so a 256-sequence
        decode step costs well under a millisecond of CPU time.
        """
        scheduled = out.scheduled
        n = len(scheduled)
        starts = np.fromiter((s.seq.num_computed_tokens for s in scheduled), np.int64, n)
        query_lens = np.fromiter((s.num_new_tokens for s in scheduled), np.int64, n)
        query_start_loc = np.zeros(n + 1, np.int64)
        np.cumsum(query_lens, out=query_start_loc[1:])
        seq_lens = starts + query_lens
        num_tokens = int(query_start_loc[-1])

        input_ids: list[int] = []
        for item, start, end in zip(scheduled, starts.tolist(), seq_lens.tolist()):
            input_ids += item.seq.token_ids[start:end]
        # Position of token t of sequence i: start_i + (t - query_start_i).
        seq_index = np.repeat(np.arange(n), query_lens)
        positions = np.arange(num_tokens) + np.repeat(starts - query_start_loc[:-1], query_lens)

        tables = [s.seq.block_table for s in scheduled]
        table_lens = np.fromiter(map(len, tables), np.int64, n)
        block_tables = np.zeros((n, int(table_lens.max())), np.int32)
        block_tables[np.arange(block_tables.shape[1]) < table_lens[:, None]] = np.fromiter(
            itertools.chain.from_iterable(tables), np.int32, int(table_lens.sum()))
        bs = self.block_size
        slots = block_tables[seq_index, positions // bs].astype(np.int64) * bs + positions % bs
        samples = np.fromiter((s.samples for s in scheduled), bool, n)
        logits_indices = query_start_loc[1:][samples] - 1

        meta = AttentionMetadata(
            slot_mapping=self._to_device(slots),
            query_start_loc=self._to_device(query_start_loc.astype(np.int32)),
            seq_lens=self._to_device(seq_lens.astype(np.int32)),
            block_tables=self._to_device(block_tables),
            max_query_len=int(query_lens.max()),
            max_seq_len=int(seq_lens.max()),
            query_start_loc_cpu=query_start_loc.tolist(),
            seq_lens_cpu=seq_lens.tolist(),
        )
        return StepInputs(self._to_device(np.asarray(input_ids, np.int64)), self._to_device(positions), meta,
                          self._to_device(logits_indices))

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        if self.device.type == "cpu":
            return tensor
        # Pinned staging memory lets the copy run asynchronously; PyTorch's caching host
        # allocator recycles it only after the copy has finished.
        return tensor.pin_memory().to(self.device, non_blocking=True)

    @torch.inference_mode()
    def run_model(self, inputs: StepInputs) -> torch.Tensor:
        """Hidden states ``[T, hidden]``: a graph replay for decode-only steps that
        fit a captured batch size, an eager forward otherwise."""
        if self.graphs is not None and self.graphs.can_run(inputs.meta):
            return self.graphs.run(inputs.input_ids, inputs.positions, inputs.meta)
        return self.model(inputs.input_ids, inputs.positions, inputs.meta)

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> list[int]:
        """Run one step; returns one sampled token per sequence that samples."""
        inputs = self.prepare(out)
        hidden = self.run_model(inputs)
        if inputs.logits_indices.numel() == 0:
            return []
        if inputs.logits_indices.numel() != hidden.shape[0]:  # decode steps sample every row
            hidden = hidden[inputs.logits_indices]
        logits = self.model.compute_logits(hidden)
        sampling = [s for s in out.scheduled if s.samples]
        return self.sampler(logits, [s.seq.seq_id for s in sampling], [s.seq.sampling_params for s in sampling])


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
