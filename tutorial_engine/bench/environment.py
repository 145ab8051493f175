"""The hardware and software a measurement ran on, recorded in every result JSON."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

import torch


def environment(device: torch.device) -> dict:
    """Hardware and software the numbers were measured with."""
    env = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "git_commit": os.environ.get("TUTORIAL_ENGINE_GIT_COMMIT") or _git_commit(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "command": invocation(),
    }
    for package in ("triton", "transformers", "flash_attn"):
        try:
            env[package] = __import__(package).__version__
        except ImportError:
            env[package] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   sm_count=props.multi_processor_count, driver=_driver_version())
    else:
        env["gpu"] = None
    return env


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _driver_version() -> str | None:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None


def invocation() -> str:
    """The command line that is running, as a reader would type it: ``python -m MODULE ARGS``
    for a module run with ``-m`` (the book shows it beside the numbers), else the script."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"python -m {spec.name.removesuffix('.__main__')}" if spec is not None else shlex.join(sys.argv[:1])
    return " ".join([program, shlex.join(sys.argv[1:])]).strip()
