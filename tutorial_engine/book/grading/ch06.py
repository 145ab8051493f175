"""Chapter 6 tasks: which CUDA graph a decode step replays, and how its static inputs are padded.

The references are the rules of ``tutorial_engine/cuda_graph.py``:
``tests/test_grading_ch06.py`` checks them against the engine's own functions and
against the buffers ``CUDAGraphDecoder.run`` fills.
"""

from __future__ import annotations

import random

from .task import Task


def capture_sizes(max_num_seqs: int) -> list[int]:
    """Batch sizes to capture: 1, 2, 4, 8 (those below max_num_seqs), every multiple of
    16 below max_num_seqs, and max_num_seqs itself, in increasing order."""
    sizes = [s for s in (1, 2, 4, 8) if s < max_num_seqs] + list(range(16, max_num_seqs, 16))
    return sizes + [max_num_seqs]


def graph_for_step(num_seqs: int, sizes: list[int]) -> int | None:
    """The smallest captured size that holds ``num_seqs`` rows; None runs the step eagerly."""
    for size in sizes:
        if size >= num_seqs:
            return size
    return None


def pad_decode_inputs(slot_mapping: list[int], seq_lens: list[int], batch_size: int) -> tuple[list[int], list[int]]:
    """Slots and context lengths of a decode step, padded to ``batch_size`` rows: padding
    rows store nothing (slot -1) and attend to one cache row (length 1)."""
    pad = batch_size - len(slot_mapping)
    return slot_mapping + [-1] * pad, seq_lens + [1] * pad


def _sizes_case(rng: random.Random) -> dict:
    return {"max_num_seqs": rng.choice([rng.randint(1, 40), rng.randint(1, 600)])}


def _step_case(rng: random.Random) -> dict:
    sizes = capture_sizes(rng.randint(1, 300))
    return {"num_seqs": rng.randint(1, sizes[-1] + 20), "sizes": sizes}


def _pad_case(rng: random.Random) -> dict:
    n = rng.randint(1, 40)
    batch = graph_for_step(n, capture_sizes(64))
    return {"slot_mapping": [rng.randint(0, 5000) for _ in range(n)],
            "seq_lens": [rng.randint(1, 4096) for _ in range(n)], "batch_size": batch}


sizes = Task(
    "ch06.sizes", capture_sizes, _sizes_case,
    hint_text="Start from [1, 2, 4, 8] keeping only the sizes below max_num_seqs, add range(16, max_num_seqs, 16), "
              "then append max_num_seqs itself, so the largest step always has a graph.",
    edge_cases=[{"max_num_seqs": 1}, {"max_num_seqs": 8}, {"max_num_seqs": 16}, {"max_num_seqs": 17},
                {"max_num_seqs": 256}],
)

step = Task(
    "ch06.step", graph_for_step, _step_case,
    hint_text="Walk the sizes in increasing order and return the first that is at least num_seqs; if the step is "
              "larger than the largest size, return None (it runs eagerly).",
    edge_cases=[{"num_seqs": 16, "sizes": capture_sizes(64)}, {"num_seqs": 17, "sizes": capture_sizes(64)},
                {"num_seqs": 65, "sizes": capture_sizes(64)}, {"num_seqs": 1, "sizes": [1]}],
)

pad = Task(
    "ch06.pad", pad_decode_inputs, _pad_case,
    hint_text="Append batch_size - len(slot_mapping) padding rows: slot -1 (the KV-cache store skips it) and "
              "context length 1 (attention reads one valid row instead of none). Real rows stay as they are.",
    edge_cases=[{"slot_mapping": [7, 19, 3], "seq_lens": [8, 20, 4], "batch_size": 4},
                {"slot_mapping": [5], "seq_lens": [6], "batch_size": 1}],
)

TASKS = [sizes, step, pad]
