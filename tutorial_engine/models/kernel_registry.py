"""Which fused kernels run by default: those that passed the GPU tests on a GPU.

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

# Each fused kernel -> the functions of fused.py whose source it runs (kernel, helpers, wrapper).
FUSED_KERNELS: dict[str, tuple[str, ...]] = {
    "rms_norm": ("_rms_norm_kernel", "rms_norm"),
    "silu_and_mul": ("_silu_and_mul_kernel", "silu_and_mul"),
    "rotary": ("_cos_sin", "_rope_heads", "_rope_kernel", "rotary"),
    "qk_norm_rope": ("_cos_sin", "_rope_heads", "_qk_norm_rope_kernel", "qk_norm_rope"),
}

FUSED_SOURCE = Path(__file__).with_name("fused.py")
VERIFIED_RECORD = Path(__file__).with_name("verified_kernels.json")


@dataclass(frozen=True)
class Verification:
    """One kernel's passing GPU run: the card's name, the git commit, the date, and the
    fingerprint of the kernel's source at that commit."""

    card: str
    commit: str
    date: str
    fingerprint: str


def fingerprint(kernel: str, source: str | None = None) -> str:
    """SHA-256 (first 16 hex digits) of the source of ``kernel``'s functions in ``fused.py``
    (or in ``source``), read with ``ast`` so that no Triton import is needed."""
    source = FUSED_SOURCE.read_text() if source is None else source
    functions = {node.name: ast.get_source_segment(source, node)
                 for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}
    missing = [name for name in FUSED_KERNELS[kernel] if name not in functions]
    if missing:
        raise ValueError(f"fused.py lacks {missing} that kernel {kernel!r} names in FUSED_KERNELS")
    text = "\n".join(functions[name] for name in FUSED_KERNELS[kernel])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
    for kernel in FUSED_KERNELS:
        reason = unverified_reason(kernel, verified)
        if reason is None:
            chosen.add(kernel)
        else:
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
    return _verified_now()
