"""Verify the device kernels (fused and attention) on this GPU and record those that pass, so they run by default.

``python -m tutorial_engine.bench.verify_kernels`` (on a CUDA GPU, from the repository
root) runs the engine's greedy parity with the fused kernels on and off, then
``tests/gpu/test_fused_kernels_gpu.py`` once per fused kernel (its bf16 and fp16 tests
inside CUDA graphs), and the Triton attention kernels' GPU tests (against the PyTorch
attention, eager and in CUDA graphs). A kernel whose tests pass is written to
``tutorial_engine/models/verified_kernels.json`` with this card's name, the commit and
its source fingerprint (what was tested, even in a copy with local changes);
``fused_kernels="verified"`` (the default) then turns it on.
A kernel that fails keeps its old record, if any, and the command exits 1.
``--dry-run`` reports without writing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shutil
import subprocess
import sys

import torch

from ..models.kernel_registry import (
    DEVICE_KERNELS, FUSED_KERNELS, VERIFIED_RECORD, Verification, fingerprint, load_verified,
)

FUSED_TESTS = "tests/gpu/test_fused_kernels_gpu.py"
# Each kernel -> the pytest arguments that select its GPU tests.
KERNEL_TESTS: dict[str, list[str]] = {
    **{kernel: [FUSED_TESTS, "-k", f"test_{kernel}"] for kernel in FUSED_KERNELS},
    "triton_attention": ["tests/gpu/test_attention_gpu.py", "tests/gpu/test_cuda_graph.py"],
}


def passes(pytest_args: list[str]) -> bool:
    """Run the GPU tests that ``pytest_args`` select; True when they ran and all passed."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args])
    return done.returncode == 0


def git(*args: str) -> str:
    """A git command's output here, or "" where there is no git or no repository."""
    if shutil.which("git") is None:
        return ""
    return subprocess.run(["git", *args], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="report only; leave the record as it is")
    parser.add_argument("--commit", default=None,
                        help="the commit under test (default: git rev-parse HEAD; for a copy without .git)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("verify_kernels needs a CUDA GPU: it records what passed on one.")
    card = torch.cuda.get_device_name()
    commit = args.commit or git("rev-parse", "HEAD")
    if not commit:
        raise SystemExit("no git checkout here: pass --commit with the commit under test")
    parity = passes([FUSED_TESTS, "-k", "greedy_parity"])
    results = {kernel: (parity or kernel not in FUSED_KERNELS) and passes(KERNEL_TESTS[kernel])
               for kernel in DEVICE_KERNELS}
    record = load_verified()
    today = datetime.date.today().isoformat()
    for kernel, ok in results.items():
        print(f"{kernel:16s} {'passed' if ok else 'FAILED'} on {card}")
        if ok:
            record[kernel] = Verification(card, commit, today, fingerprint(kernel))
    if not args.dry_run:
        VERIFIED_RECORD.write_text(json.dumps({k: dataclasses.asdict(v) for k, v in sorted(record.items())},
                                              indent=2) + "\n")
        print(f"wrote {VERIFIED_RECORD}")
    if not all(results.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
