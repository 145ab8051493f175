"""Which device kernels run by default: those that passed the GPU tests on a GPU.

Triton's CPU interpreter checks a kernel's arithmetic and an ahead-of-time compile
checks that it builds for a card, but only a GPU run shows that the compiled kernel
computes the right thing there. So the engine's rule (``fused_kernels="verified"``, the
default) is: a fused kernel runs only if ``verified_kernels.json`` records that it
passed ``tests/gpu`` on a GPU, with the card, the commit and a fingerprint of its
source. Editing a kernel changes its fingerprint, which turns it off again (the
unfused PyTorch path runs instead) until
``python -m tutorial_engine.bench.verify_kernels`` passes on a GPU and records it anew.

``fused_kernels="all"`` turns every fused kernel on (what the GPU tests exercise),
``"none"`` turns them all off. On a CPU none runs: the PyTorch code is the reference.

The Triton attention backend's kernels follow the same rule as one entry,
``triton_attention``: ``attention_backend="auto"`` picks Triton (or FlashAttention,
which stores K/V with the Triton store kernel) only while that entry is verified, and
the PyTorch attention otherwise; ``attention_backend="triton"`` runs them regardless.
"""

from __future__ import annotations

import ast
import hashlib
import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import torch

logger = logging.getLogger(__name__)

FusedKernelsMode = Literal["verified", "all", "none"]
FUSED_KERNEL_MODES: tuple[FusedKernelsMode, ...] = ("verified", "all", "none")

PACKAGE = Path(__file__).resolve().parents[1]
FUSED_SOURCE = PACKAGE / "models" / "fused.py"
VERIFIED_RECORD = Path(__file__).with_name("verified_kernels.json")

# A kernel's source: file (relative to the package) -> the top-level functions and constants of
# that file it runs (kernel, helpers, wrapper, tuning constants).
KernelSource = dict[str, tuple[str, ...]]

FUSED_KERNELS: dict[str, KernelSource] = {
    "rms_norm": {"models/fused.py": ("_rms_norm_kernel", "rms_norm")},
    "silu_and_mul": {"models/fused.py": ("_silu_and_mul_kernel", "silu_and_mul")},
    "rotary": {"models/fused.py": ("_cos_sin", "_rope_heads", "_rope_kernel", "rotary")},
    "qk_norm_rope": {"models/fused.py": ("_cos_sin", "_rope_heads", "_qk_norm_rope_kernel", "qk_norm_rope")},
}
ATTENTION_KERNELS: dict[str, KernelSource] = {
    "triton_attention": {
        "attention/triton_store.py": ("_store_kvcache_kernel", "store_kvcache"),
        "attention/triton_decode.py": ("_paged_decode_kernel", "_merge_splits_kernel", "paged_decode"),
        "attention/triton_prefill.py": ("_paged_prefill_kernel", "paged_prefill"),
        "attention/triton_backend.py": ("DECODE_BLOCK_N", "DECODE_NUM_WARPS", "DECODE_NUM_STAGES", "PROGRAMS_PER_SM",
                                        "MAX_SPLITS", "MIN_TOKENS_PER_SPLIT", "num_kv_splits", "paged_attention"),
    },
}
DEVICE_KERNELS: dict[str, KernelSource] = {**FUSED_KERNELS, **ATTENTION_KERNELS}


@dataclass(frozen=True)
class Verification:
    """One kernel's passing GPU run: the card's name, the git commit, the date, and the
    fingerprint of the kernel's source at that commit."""

    card: str
    commit: str
    date: str
    fingerprint: str


def fingerprint(kernel: str, sources: dict[str, str] | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the source of ``kernel``'s functions and constants
    (``DEVICE_KERNELS``), read with ``ast`` so that no Triton import is needed. ``sources``
    maps a file (as ``DEVICE_KERNELS`` names it) to a text that replaces it (tests plant edits so)."""
    sources = sources or {}
    parts = []
    for file, names in DEVICE_KERNELS[kernel].items():
        source = sources.get(file) or (PACKAGE / file).read_text()
        segments = {}
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef):
                segments[node.name] = ast.get_source_segment(source, node)
            elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                segments[node.targets[0].id] = ast.get_source_segment(source, node)
        missing = [name for name in names if name not in segments]
        if missing:
            raise ValueError(f"{file} lacks {missing} that kernel {kernel!r} names in DEVICE_KERNELS")
        parts.extend(segments[name] for name in names)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def load_verified(path: Path | None = None) -> dict[str, Verification]:
    """The recorded GPU verifications (``verified_kernels.json`` unless ``path``), by kernel name."""
    path = VERIFIED_RECORD if path is None else path
    if not path.exists():
        return {}
    return {name: Verification(**entry) for name, entry in json.loads(path.read_text()).items()}


def unverified_reason(kernel: str, verified: dict[str, Verification]) -> str | None:
    """Why ``kernel`` is not GPU-verified as its source stands, or None if it is."""
    record = verified.get(kernel)
    if record is None:
        return "it has not passed the GPU tests on a GPU yet"
    if record.fingerprint != fingerprint(kernel):
        return (f"its source changed after it passed the GPU tests on {record.card} "
                f"(commit {record.commit[:10]})")
    return None


@cache
def _verified_now() -> frozenset[str]:
    verified = load_verified()
    chosen = set()
    for kernel in DEVICE_KERNELS:
        reason = unverified_reason(kernel, verified)
        if reason is None:
            chosen.add(kernel)
        elif kernel in FUSED_KERNELS:
            logger.info("fused kernel %s is off (the unfused PyTorch path runs): %s; "
                        "fused_kernels='all' turns it on", kernel, reason)
    return frozenset(chosen)


def select_fused_kernels(mode: FusedKernelsMode, device: torch.device) -> frozenset[str]:
    """The fused kernels to run on ``device`` under ``fused_kernels=mode``: none on a
    CPU or with ``"none"``, all with ``"all"``, the GPU-verified ones with ``"verified"``."""
    if device.type != "cuda" or mode == "none":
        return frozenset()
    if mode == "all":
        return frozenset(FUSED_KERNELS)
    return _verified_now() & frozenset(FUSED_KERNELS)


def triton_attention_unverified_reason() -> str | None:
    """Why the Triton attention kernels are not GPU-verified as their source stands, or None."""
    return unverified_reason("triton_attention", load_verified())
