"""Runs one scheduled step on the device: builds the flat batch, runs the model,
samples. Planning (the scheduler) stays on the CPU side, so a later chapter can
overlap the next step's planning with this step's forward pass."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .attention import AttentionMetadata, get_attention_backend
from .config import EngineConfig
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
    """Owns the model, its KV cache pages and the sampler on one device.

    Args:
        config: engine configuration.
        model: a loaded :class:`CausalLM` on ``device``.
        num_blocks: KV-cache pages to allocate per layer.
    """

    def __init__(self, config: EngineConfig, model: CausalLM, device: torch.device, num_blocks: int) -> None:
        self.model = model
        self.spec: DecoderSpec = model.spec
        self.device = device
        self.block_size = config.kvcache_block_size
        self.backend = get_attention_backend(config.attention_backend, device)
        self.sampler = Sampler(device, config.seed)
        self.kv_cache = allocate_kv_cache(model, num_blocks, self.block_size, device)
        for layer in model.attention_layers():
            layer.backend = self.backend
        logger.info("attention backend %s, %d KV blocks of %d tokens", self.backend.name, num_blocks, self.block_size)

    def prepare(self, out: SchedulerOutput) -> StepInputs:
        """Flatten the scheduled sequences into one varlen batch (see AttentionMetadata)."""
        input_ids, positions, slots, logits_indices = [], [], [], []
        query_start_loc, seq_lens, block_tables = [0], [], []
        bs = self.block_size
        for item in out.scheduled:
            seq, start = item.seq, item.seq.num_computed_tokens
            end = start + item.num_new_tokens
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, end))
            query_start_loc.append(query_start_loc[-1] + item.num_new_tokens)
            seq_lens.append(end)
            block_tables.append(table)
            if item.samples:
                logits_indices.append(query_start_loc[-1] - 1)
        max_blocks = max(len(t) for t in block_tables)
        padded_tables = [t + [0] * (max_blocks - len(t)) for t in block_tables]

        def to_device(values, dtype):
            return torch.tensor(values, dtype=dtype, pin_memory=self.device.type == "cuda").to(self.device, non_blocking=True)

        meta = AttentionMetadata(
            slot_mapping=to_device(slots, torch.int64),
            query_start_loc=to_device(query_start_loc, torch.int32),
            seq_lens=to_device(seq_lens, torch.int32),
            block_tables=to_device(padded_tables, torch.int32),
            max_query_len=max(s.num_new_tokens for s in out.scheduled),
            max_seq_len=max(seq_lens),
            query_start_loc_cpu=query_start_loc,
            seq_lens_cpu=seq_lens,
        )
        return StepInputs(to_device(input_ids, torch.int64), to_device(positions, torch.int64), meta,
                          to_device(logits_indices, torch.int64))

    @torch.inference_mode()
    def execute(self, out: SchedulerOutput) -> list[int]:
        """Run one step; returns one sampled token per sequence that samples."""
        inputs = self.prepare(out)
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.meta)
        if inputs.logits_indices.numel() == 0:
            return []
        logits = self.model.compute_logits(hidden[inputs.logits_indices])
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
