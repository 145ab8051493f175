"""Chapter 3 tasks: address tokens through a block table, and merge split-K results.

- ``slots``: the slot mapping the model runner builds (``block_manager.KVCacheManager.slot``):
  token ``p`` of a request lives at ``block_table[p // block_size] * block_size + p % block_size``.
- ``merge``: the second pass of the Triton decode kernel (``attention/triton_decode.py``,
  Flash-Decoding, Dao et al. 2023): each split of the context returns its normalised
  attention output and the log-sum-exp of its scores; the exact output weighs each split by
  ``exp(lse_s - max lse)``. Natural logarithms here; the kernel uses base 2.

``tests/test_grading_ch03.py`` checks both tasks both ways and the merge against full attention.
"""

from __future__ import annotations

import math
import random

import torch

from .task import Task


def slot_mapping(block_table: list[int], start: int, end: int, block_size: int) -> list[int]:
    """Flat cache slots of token positions ``start .. end - 1`` of one request."""
    return [block_table[p // block_size] * block_size + p % block_size for p in range(start, end)]


def merge_splits(outputs: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """Combine per-split attention outputs ``[S, D]`` with their log-sum-exps ``[S]`` into ``[D]``.

    An empty split has ``lse = -inf`` (and any output): it must get weight 0.
    """
    top = lse.max()
    weights = torch.exp(lse - top)  # <= 1: no overflow however large the scores
    return (weights[:, None] * outputs).sum(0) / weights.sum()


def _slots_case(rng: random.Random) -> dict:
    block_size = rng.choice([1, 2, 4, 16])
    num_blocks = rng.randint(1, 6)
    table = rng.sample(range(64), num_blocks)  # scattered physical blocks
    end = rng.randint(1, num_blocks * block_size)
    return {"block_table": table, "start": rng.randint(0, end - 1), "end": end, "block_size": block_size}


def split_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cuts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of one query ``[D]`` over keys/values ``[N, D]``, computed separately on the
    ranges between ``cuts`` (0 <= cuts <= N, sorted): per-range outputs ``[S, D]`` and lse ``[S]``."""
    bounds = [0, *cuts, k.shape[0]]
    outputs, lse = [], []
    for lo, hi in zip(bounds, bounds[1:]):
        scores = k[lo:hi] @ q
        if hi == lo:
            outputs.append(torch.zeros_like(q))
            lse.append(torch.tensor(-math.inf, dtype=q.dtype))
        else:
            outputs.append(torch.softmax(scores, 0) @ v[lo:hi])
            lse.append(torch.logsumexp(scores, 0))
    return torch.stack(outputs), torch.stack(lse)


def _merge_case(rng: random.Random) -> dict:
    gen = torch.Generator().manual_seed(rng.randrange(2**31))
    n, d = rng.randint(1, 40), rng.choice([4, 8])
    q = torch.randn(d, generator=gen, dtype=torch.float64) * rng.choice([1.0, 30.0])  # 30: scores in the hundreds
    k = torch.randn(n, d, generator=gen, dtype=torch.float64)
    v = torch.randn(n, d, generator=gen, dtype=torch.float64)
    cuts = sorted(rng.randint(0, n) for _ in range(rng.randint(0, 4)))  # repeated cuts: empty splits
    outputs, lse = split_attention(q, k, v, cuts)
    return {"outputs": outputs, "lse": lse}


slots = Task(
    "ch03.slots", slot_mapping, _slots_case,
    hint_text="Position p is in the request's (p // block_size)-th block, whose physical id is "
              "block_table[p // block_size]; inside it, p is row p % block_size. A physical block b starts "
              "at flat slot b * block_size.",
    edge_cases=[
        {"block_table": [7, 2, 5], "start": 0, "end": 12, "block_size": 4},  # every token, scattered blocks
        {"block_table": [3, 0], "start": 4, "end": 5, "block_size": 4},  # one decode token opening block 2 of the table
        {"block_table": [9], "start": 0, "end": 1, "block_size": 1},
    ],
)

merge = Task(
    "ch03.merge", merge_splits, _merge_case,
    hint_text="Split s computed softmax over its own scores, so its output is its share divided by its own "
              "sum exp(lse_s). Weight it by exp(lse_s) and divide by the total weight. Subtract max(lse) "
              "before exponentiating (scores can be in the hundreds), and remember exp(-inf) = 0 for empty splits.",
    edge_cases=[
        {"outputs": torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64),
         "lse": torch.tensor([0.0, 0.0], dtype=torch.float64)},  # equal weights: the plain average
        {"outputs": torch.tensor([[1.0, 2.0], [5.0, 5.0], [3.0, 4.0]], dtype=torch.float64),
         "lse": torch.tensor([800.0, -math.inf, 801.0], dtype=torch.float64)},  # huge scores and an empty split
    ],
)

TASKS = [slots, merge]
