"""Verify the fused kernels on this GPU and record those that pass, so they run by default.

``python -m tutorial_engine.bench.verify_kernels`` (on a CUDA GPU, from the repository
root) runs ``tests/gpu/test_fused_kernels_gpu.py`` once per kernel (its bf16 and fp16
tests inside CUDA graphs) and then the engine's greedy parity with the fused kernels
on and off. A kernel whose tests and the parity test pass is written to
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

from ..models.kernel_registry import FUSED_KERNELS, VERIFIED_RECORD, Verification, fingerprint, load_verified

TESTS = "tests/gpu/test_fused_kernels_gpu.py"


def passes(selection: str) -> bool:
    """Run the GPU tests that ``-k selection`` picks; True when they ran and all passed."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TESTS, "-k", selection])
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
    parity = passes("greedy_parity")
    results = {kernel: parity and passes(f"test_{kernel}") for kernel in FUSED_KERNELS}
    record = load_verified()
    today = datetime.date.today().isoformat()
    for kernel, ok in results.items():
        print(f"{kernel:14s} {'passed' if ok else 'FAILED'} on {card}")
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
