"""CUDA graphs for decode steps: record the forward pass once per batch size, replay it.

A decode step of a small model is hundreds of tiny kernels (matmuls, norms, RoPE,
attention per layer); launching each from Python costs a few microseconds of CPU,
often more than the GPU needs to run it. A CUDA graph records the whole sequence of
launches once and replays it with one call (NVIDIA, "CUDA Graphs", CUDA C++
Programming Guide). vLLM and nano-vLLM capture decode steps this way.

A graph replays *fixed* kernels on *fixed* memory addresses, which shapes the design:

* Static buffers: inputs live in tensors allocated once; each step copies its values
  into them before ``replay()``, and reads the output from the same place each time.
* Fixed shapes: one graph per batch size in :func:`capture_batch_sizes`; a step of
  ``n`` sequences runs the smallest captured size ``>= n``. Padding rows get slot -1
  (the KV store skips it) and context length 1 (attention reads one valid cache row),
  and their outputs are dropped.
* Nothing may depend on host values: the attention backend must read lengths and
  block tables from device tensors and never sync (``supports_cuda_graphs``). The
  torch reference backend loops over Python lists of lengths, so with it the engine
  runs decode eagerly. ``max_seq_len`` is captured as ``max_model_len``, an upper bound.
* Only decode-only steps (one new token per sequence) are captured; prefill and mixed
  chunked-prefill steps have data-dependent shapes and run eagerly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .attention import AttentionBackend, AttentionMetadata

if TYPE_CHECKING:
    from .config import EngineConfig
    from .models import CausalLM


def capture_batch_sizes(max_num_seqs: int) -> list[int]:
    """Batch sizes to capture: 1, 2, 4, 8, then every multiple of 16 up to
    ``max_num_seqs`` (included), so padding wastes at most 15 rows (nano-vLLM's choice)."""
    sizes = [s for s in (1, 2, 4, 8) if s < max_num_seqs] + list(range(16, max_num_seqs, 16))
    return sizes + [max_num_seqs]


def padded_batch_size(num_seqs: int, batch_sizes: list[int]) -> int | None:
    """The captured batch size a decode step of ``num_seqs`` sequences replays: the
    smallest one ``>= num_seqs``, or None when the step is larger than every graph."""
    return next((size for size in batch_sizes if size >= num_seqs), None)


def graphs_unavailable_reason(config: EngineConfig, device: torch.device, backend: AttentionBackend) -> str | None:
    """Why decode steps must run eagerly, or None when they can be captured."""
    if config.enforce_eager:
        return "enforce_eager=True"
    if device.type != "cuda":
        return f"device {device} is not a CUDA GPU"
    if not backend.supports_cuda_graphs:
        return f"attention backend {backend.name!r} is not graph-safe (it reads host-side lengths)"
    return None


class CUDAGraphDecoder:
    """Captured decode forward passes of ``model``, one per batch size.

    Args:
        model: the model, with its attention layers already pointing at the KV cache
            the graphs will read and write (the cache must never move afterwards).
        max_num_seqs: largest batch to capture.
        max_blocks_per_seq: block-table width, ``ceil(max_model_len / block_size)``.
        max_model_len: the ``max_seq_len`` the captured metadata claims.
        device: a CUDA device.

    Static buffers (device): ``input_ids``/``positions``/``slot_mapping`` int64
    ``[max_num_seqs]``, ``seq_lens`` int32 ``[max_num_seqs]``, ``query_start_loc``
    int32 ``[max_num_seqs + 1]`` (0, 1, 2, ...: one token each), ``block_tables`` int32
    ``[max_num_seqs, max_blocks_per_seq]``; outputs ``[batch, hidden]`` per graph.
    """

    def __init__(self, model: CausalLM, max_num_seqs: int, max_blocks_per_seq: int, max_model_len: int,
                 device: torch.device) -> None:
        self.model = model
        self.batch_sizes = capture_batch_sizes(max_num_seqs)
        self.max_batch_size = self.batch_sizes[-1]
        self.max_model_len = max_model_len
        n = self.max_batch_size
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=device)
        self.positions = torch.zeros(n, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.int64, device=device)
        self.seq_lens = torch.ones(n, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(n + 1, dtype=torch.int32, device=device)
        self.block_tables = torch.zeros(n, max_blocks_per_seq, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self._capture_all()

    def _metadata(self, batch_size: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:batch_size],
            query_start_loc=self.query_start_loc[: batch_size + 1],
            seq_lens=self.seq_lens[:batch_size],
            block_tables=self.block_tables[:batch_size],
            max_query_len=1,
            max_seq_len=self.max_model_len,
            query_start_loc_cpu=list(range(batch_size + 1)),
            seq_lens_cpu=[self.max_model_len] * batch_size,
        )

    def _forward(self, batch_size: int) -> torch.Tensor:
        return self.model(self.input_ids[:batch_size], self.positions[:batch_size], self._metadata(batch_size))

    def _capture_all(self) -> None:
        # Largest first: smaller graphs then reuse the memory pool the largest one sized.
        pool = None
        for batch_size in reversed(self.batch_sizes):
            self._forward(batch_size)  # warm-up: compiles kernels, picks cuBLAS algorithms
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.outputs[batch_size] = self._forward(batch_size)
            pool = graph.pool()
            self.graphs[batch_size] = graph
        torch.cuda.synchronize()

    def can_run(self, meta: AttentionMetadata) -> bool:
        """True for a decode-only step with at most ``max_num_seqs`` sequences."""
        return meta.is_decode_only and padded_batch_size(meta.num_seqs, self.batch_sizes) is not None

    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Replay the graph for this decode step; returns hidden states ``[n, hidden]``.

        The returned tensor is the graph's output buffer: read it before the next replay.
        """
        n = meta.num_seqs
        batch_size = padded_batch_size(n, self.batch_sizes)
        self.input_ids[:n].copy_(input_ids)
        self.positions[:n].copy_(positions)
        self.slot_mapping[:n].copy_(meta.slot_mapping)
        self.slot_mapping[n:batch_size].fill_(-1)
        self.seq_lens[:n].copy_(meta.seq_lens)
        self.seq_lens[n:batch_size].fill_(1)
        width = meta.block_tables.shape[1]
        self.block_tables[:n, :width].copy_(meta.block_tables)
        self.graphs[batch_size].replay()
        return self.outputs[batch_size][:n]
