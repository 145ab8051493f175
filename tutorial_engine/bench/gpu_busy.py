"""How busy a real GPU was over a stretch of time, from NVML's utilization counter.

NVML's ``utilization.gpu`` is the percentage of its last sample period (1/6 s to 1 s,
by card) during which one or more kernels ran on the GPU; ``nvidia-smi`` reads it.
Sampled every ``interval_ms`` over a run and averaged, it is the fraction of the run
the device was executing something: the same quantity the simulated device reports
exactly (``device_busy_seconds`` / duration), measured on a card. It does not say how
*well* the kernels used the GPU, only that the host kept it fed.
"""

from __future__ import annotations

import subprocess
import threading


class GpuBusySampler:
    """``with GpuBusySampler(index) as s: ...`` then ``s.fraction`` (0..1), the mean of
    NVML utilization samples taken while the block ran.

    Raises:
        FileNotFoundError: ``nvidia-smi`` is not on ``PATH`` (no NVIDIA driver).
        RuntimeError: the block ended before one sample was read.
    """

    def __init__(self, index: int = 0, interval_ms: int = 100) -> None:
        self.command = ["nvidia-smi", "-i", str(index), "--query-gpu=utilization.gpu",
                        "--format=csv,noheader,nounits", "-lms", str(interval_ms)]
        self.samples: list[float] = []

    def __enter__(self) -> GpuBusySampler:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.strip().isdigit():
                self.samples.append(float(line))

    def __exit__(self, *exc_info) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.reader.join(timeout=10)

    @property
    def fraction(self) -> float:
        if not self.samples:
            raise RuntimeError(f"no utilization sample was read from {' '.join(self.command)}")
        return sum(self.samples) / (100.0 * len(self.samples))
