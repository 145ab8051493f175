"""Host-to-device copies that never make the CPU wait for the GPU.

``torch.tensor(values, device="cuda")`` or ``.to("cuda")`` on ordinary (pageable)
memory blocks the CPU until every kernel queued before the copy has run, and then the
CPU can no longer plan the next step while the GPU works (chapter 7). Copying from
pinned memory with ``non_blocking=True`` only queues the copy.
"""

from __future__ import annotations

import numpy as np
import torch


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` as a tensor on ``device``, copied asynchronously on a GPU (the same
    memory, no copy, on a CPU). PyTorch's caching host allocator recycles the pinned
    staging buffer only after the copy has finished."""
    tensor = torch.from_numpy(array)
    if device.type == "cpu":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)
