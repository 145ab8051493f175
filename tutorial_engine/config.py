"""Engine configuration: the knobs vLLM / nano-vLLM name the same way."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from .checks import as_bool, as_float, as_int, show
from .distributed import check_devices
from .models.kernel_registry import FUSED_KERNEL_MODES, FusedKernelsMode
from .spec_decode.config import SpeculativeConfig, parse_speculative_config

logger = logging.getLogger(__name__)

AttentionBackendName = Literal["auto", "torch", "triton", "flash_attn"]
PrefixCachingMode = Literal["none", "hash", "radix"]
LoadFormat = Literal["auto", "dummy"]
DType = Literal["auto", "float32", "float16", "bfloat16"]
SchedulingPolicy = Literal["fcfs", "sjf"]
DistributedExecutorBackend = Literal["mp", "ray"]
ATTENTION_BACKENDS = get_args(AttentionBackendName)
PREFIX_CACHING_MODES = get_args(PrefixCachingMode)
LOAD_FORMATS = get_args(LoadFormat)
SCHEDULING_POLICIES = get_args(SchedulingPolicy)
DTYPES = get_args(DType)
DISTRIBUTED_EXECUTOR_BACKENDS = get_args(DistributedExecutorBackend)


@dataclass
class EngineConfig:
    """Everything ``LLM(model=..., **config)`` accepts.

    ``scheduling_policy``: the order queued requests are admitted in: ``"fcfs"``
    (first come, first served) or ``"sjf"`` (shortest prompt first; chapter 9).

    ``overlap_scheduling``: plan step N+1 while the GPU runs step N (chapter 7);
    ``None`` turns it on on a GPU and off on a CPU, where nothing runs concurrently.

    Memory: ``num_kvcache_blocks`` pages of ``kvcache_block_size`` tokens each hold
    the KV cache. Left as ``None`` it is sized from ``gpu_memory_utilization`` of the
    GPU (after profiling a worst-case step), or from ``cpu_kvcache_space_gib`` on a CPU.

    Types are checked too: int fields take ints (numpy ints are converted; bools and
    floats are refused), float fields finite numbers, switches real bools (``"no"`` is
    not False), ``device`` one of 'auto', 'cpu', 'cuda', 'cuda:N' that this machine has,
    or 'sim': a simulated H200 that runs no model (``sim/device.py``; host work on the CPU).

    ``fused_kernels``: on a GPU, which fused Triton kernels (RMSNorm, SwiGLU, RoPE,
    Qwen3's q/k norm + RoPE; ``models/fused.py``) replace the PyTorch code:
    ``"verified"`` (default) those recorded as having passed the GPU tests on a GPU
    (``models/kernel_registry.py``), ``"all"``, or ``"none"``. Outputs do not change.

    ``tensor_parallel_size``: split the model over this many processes (chapter 8), on
    consecutive GPUs from ``device`` (which must all exist), or all on the CPU (gloo).

    ``distributed_executor_backend`` (vLLM's name): how ranks 1..N-1 start. ``"mp"``
    (default): worker processes on this machine (chapter 8). ``"ray"``: Ray actors in
    a placement group, so the ranks may span the machines of a Ray cluster (chapter
    11; ``RAY_ADDRESS`` joins one, else a local Ray instance starts); Ray then picks
    every rank's GPU, so ``device`` names only the kind. With one rank there is no
    worker to start and both backends run the model in this process, without Ray.

    ``speculative_config``: speculative decoding (chapter 10), vLLM's dict form or its
    JSON: ``{"method": "ngram", "num_speculative_tokens": k}`` (prompt lookup) or
    ``{"model": draft_path, "num_speculative_tokens": k}`` (a draft model with the
    target's tokenizer); parsed into a :class:`SpeculativeConfig` here, the draft's
    vocabulary checked against the target's by the engine before any weight loads.

    Raises:
        TypeError: a field of the wrong type, naming the field and the type it needs.
        ValueError: for out-of-range values, or a device (or, for tensor parallelism,
            GPUs) this machine lacks, naming the value and the fix.
        FileNotFoundError: ``model`` is not a folder.
    """

    model: str
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    cpu_kvcache_space_gib: float = 1.0
    kvcache_block_size: int = 16
    num_kvcache_blocks: int | None = None
    enforce_eager: bool = False
    enable_chunked_prefill: bool = True
    overlap_scheduling: bool | None = None
    prefix_caching: PrefixCachingMode = "none"
    tensor_parallel_size: int = 1
    attention_backend: AttentionBackendName = "auto"
    fused_kernels: FusedKernelsMode = "verified"
    device: str = "auto"
    dtype: DType = "auto"
    seed: int = 0
    load_format: LoadFormat = "auto"
    scheduling_policy: SchedulingPolicy = "fcfs"
    speculative_config: SpeculativeConfig | dict | str | None = None
    distributed_executor_backend: DistributedExecutorBackend = "mp"

    def __post_init__(self) -> None:
        self._check_types()
        self.speculative_config = parse_speculative_config(self.speculative_config)
        checks = [
            (self.max_num_seqs >= 1, f"max_num_seqs={self.max_num_seqs} must be >= 1"),
            (self.max_num_batched_tokens >= 1, f"max_num_batched_tokens={self.max_num_batched_tokens} must be >= 1"),
            (self.kvcache_block_size >= 1, f"kvcache_block_size={self.kvcache_block_size} must be >= 1"),
            (0 < self.gpu_memory_utilization <= 1, f"gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]"),
            (self.cpu_kvcache_space_gib > 0, f"cpu_kvcache_space_gib={self.cpu_kvcache_space_gib} must be > 0"),
            (self.num_kvcache_blocks is None or self.num_kvcache_blocks >= 1,
             f"num_kvcache_blocks={self.num_kvcache_blocks} must be >= 1 (or None to size it from memory)"),
            (self.max_model_len is None or self.max_model_len >= 1, f"max_model_len={self.max_model_len} must be >= 1"),
            (self.tensor_parallel_size >= 1, f"tensor_parallel_size={self.tensor_parallel_size} must be >= 1"),
            (self.seed >= 0, f"seed={self.seed} must be >= 0"),
            (self.attention_backend in ATTENTION_BACKENDS,
             f"attention_backend={self.attention_backend!r} is unknown; choose one of {ATTENTION_BACKENDS}"),
            (self.fused_kernels in FUSED_KERNEL_MODES,
             f"fused_kernels={self.fused_kernels!r} is unknown; choose one of {FUSED_KERNEL_MODES}"),
            (self.prefix_caching in PREFIX_CACHING_MODES,
             f"prefix_caching={self.prefix_caching!r} is unknown; choose one of {PREFIX_CACHING_MODES}"),
            (self.load_format in LOAD_FORMATS, f"load_format={self.load_format!r} is unknown; choose one of {LOAD_FORMATS}"),
            (self.scheduling_policy in SCHEDULING_POLICIES,
             f"scheduling_policy={self.scheduling_policy!r} is unknown; choose one of {SCHEDULING_POLICIES}"),
            (self.dtype in DTYPES,
             f"dtype={self.dtype!r} is unknown; choose 'auto', 'float32', 'float16' or 'bfloat16'"),
            (self.distributed_executor_backend in DISTRIBUTED_EXECUTOR_BACKENDS,
             f"distributed_executor_backend={self.distributed_executor_backend!r} is unknown; choose 'mp' "
             "(worker processes on this machine) or 'ray' (Ray actors, across machines)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self._check_device()
        if self.distributed_executor_backend == "mp":  # with Ray, the cluster's GPUs count (placement group)
            check_devices(self.resolve_device(), self.tensor_parallel_size)
        if not Path(self.model).is_dir():
            raise FileNotFoundError(
                f"model={self.model!r} is not a folder; pass the path of a Hugging Face checkpoint "
                "folder (config.json + *.safetensors), e.g. a local download of Qwen/Qwen3-0.6B."
            )

    def _check_types(self) -> None:
        """Ints are ints (numpy ints converted), floats finite numbers, switches bools."""
        if not isinstance(self.model, (str, os.PathLike)):
            raise TypeError(f"model={show(self.model)} has type {type(self.model).__name__}; "
                            "pass the checkpoint folder as a str or pathlib.Path.")
        for name in ("max_num_seqs", "max_num_batched_tokens", "kvcache_block_size", "tensor_parallel_size", "seed"):
            setattr(self, name, as_int(name, getattr(self, name)))
        for name in ("max_model_len", "num_kvcache_blocks"):  # None: derived from the model / memory
            if getattr(self, name) is not None:
                setattr(self, name, as_int(name, getattr(self, name)))
        for name in ("gpu_memory_utilization", "cpu_kvcache_space_gib"):
            setattr(self, name, as_float(name, getattr(self, name)))
        for name in ("enforce_eager", "enable_chunked_prefill"):
            setattr(self, name, as_bool(name, getattr(self, name)))

    def _check_device(self) -> None:
        """``device`` is 'auto', 'sim', 'cpu', 'cuda' or 'cuda:N', and present on this machine."""
        if self.device in ("auto", "sim"):
            return
        try:
            device = torch.device(self.device) if isinstance(self.device, str) else None
        except RuntimeError:  # an unparsable string such as "gpu0"
            device = None
        if device is None or device.type not in ("cpu", "cuda"):
            raise ValueError(f"device={show(self.device)} is not supported; "
                             "use 'auto', 'cpu', 'cuda' or 'cuda:N' ('sim': a simulated GPU).")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r} but this machine has no usable CUDA GPU (or torch is a CPU "
                             "build); use device='cpu', or 'auto' to pick the GPU when there is one.")
        if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(f"device={self.device!r} but this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                             f"use an index below {torch.cuda.device_count()}, or 'cuda'.")

    def resolve_device(self) -> torch.device:
        if self.device == "sim":  # the simulated device computes nothing: host tensors only
            return torch.device("cpu")
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def resolve_dtype(requested: str, checkpoint_dtype: torch.dtype | None, device: torch.device) -> torch.dtype:
    """``auto`` keeps the checkpoint's dtype on a GPU and uses float32 on a CPU.

    GPUs before Ampere (compute capability below 8.0: V100, T4, RTX 20xx) have no
    bfloat16 arithmetic: ``auto`` then runs a bfloat16 checkpoint in float16 and logs
    why; an explicit ``dtype="bfloat16"`` is refused before any weight is loaded.

    Raises:
        ValueError: ``dtype="bfloat16"`` on a GPU without bfloat16, naming the fix.
    """
    if requested == "auto" and device.type == "cpu":
        return torch.float32
    if requested == "auto":
        dtype = checkpoint_dtype if checkpoint_dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    else:
        dtype = getattr(torch, requested)
    if dtype == torch.bfloat16 and device.type == "cuda" and not _has_bf16(device):
        card = f"{torch.cuda.get_device_name(device)} (sm_{''.join(map(str, torch.cuda.get_device_capability(device)))})"
        if requested == "bfloat16":
            raise ValueError(f"dtype='bfloat16' but {card} has no bfloat16 arithmetic (it needs compute capability "
                             "8.0+, an A100/A10/RTX 30xx or newer); use dtype='float16' or 'auto'.")
        logger.warning("%s has no bfloat16 arithmetic (compute capability below 8.0): running the bfloat16 "
                       "checkpoint in float16 instead", card)
        return torch.float16
    return dtype


def _has_bf16(device: torch.device) -> bool:
    """bfloat16 tensor cores and arithmetic arrived with Ampere (compute capability 8.0)."""
    return torch.cuda.get_device_capability(device) >= (8, 0)
