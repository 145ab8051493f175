"""The GPU busy fraction of ``bench serve --compare-engine-core`` on a real card: NVML's
utilization samples, read from ``nvidia-smi`` (a stand-in script here, on this CPU)."""

from __future__ import annotations

import os
import stat
import time

import pytest

from tutorial_engine.bench.gpu_busy import GpuBusySampler


def fake_nvidia_smi(folder, lines: list[str]) -> None:
    script = folder / "nvidia-smi"
    body = "".join(f"echo '{line}'; sleep 0.01\n" for line in lines)
    script.write_text(f"#!/bin/sh\n{body}exec sleep 30\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_busy_fraction_is_the_mean_of_the_samples_taken(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, ["100", "50", "[N/A]", "0", "50"])
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with GpuBusySampler() as sampler:
        time.sleep(0.5)
    assert sampler.fraction == pytest.approx(0.5)  # (100 + 50 + 0 + 50) / 4 / 100; "[N/A]" skipped
    assert sampler.process.poll() is not None  # nvidia-smi stopped with the block


def test_no_sample_is_an_error_not_a_zero(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, [])
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with GpuBusySampler() as sampler:
        pass
    with pytest.raises(RuntimeError, match="no utilization sample"):
        sampler.fraction
