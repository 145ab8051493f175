"""Chapter 8 tasks: the communication volume of tensor parallelism.

The traffic is that of the engine's sharded model (``models/layers.py``, the
Megatron-LM layout of Shoeybi et al., 2019, section 3): per decoder layer one
all-reduce after the attention output projection and one after the MLP down
projection, each of a ``[num_tokens, hidden_size]`` activation; one more after the
vocabulary-parallel embedding; the vocabulary shards of the sampled rows' logits
gathered to rank 0; the sampled token ids (int64) broadcast from rank 0. A ring
all-reduce of ``M`` bytes over ``N`` GPUs makes each GPU send ``2 (N - 1) / N * M``
bytes (a reduce-scatter, then an all-gather; Patarasuk & Yuan, 2009; NCCL's docs).
``tests/test_grading_ch08.py`` checks these references against the collectives the
engine actually issues.
"""

from __future__ import annotations

import math
import random

from .task import Task


def layer_all_reduce_bytes(num_tokens: int, hidden_size: int, dtype_bytes: int) -> int:
    """Bytes one decoder layer all-reduces in one step: the attention output and the
    MLP output, each ``[num_tokens, hidden_size]`` in the model's dtype."""
    return 2 * num_tokens * hidden_size * dtype_bytes


def ring_bytes_sent_per_gpu(message_bytes: int, world_size: int) -> float:
    """Bytes each GPU sends in a ring all-reduce of ``message_bytes``: a reduce-scatter
    and an all-gather, each passing N - 1 chunks of message_bytes / N."""
    return 2 * (world_size - 1) / world_size * message_bytes


def step_communication(num_layers: int, hidden_size: int, vocab_size: int, num_tokens: int, num_sampled: int,
                       world_size: int, dtype_bytes: int) -> dict:
    """The traffic of one engine step on ``world_size`` ranks (all zeros on one rank)."""
    if world_size == 1:
        return {"all_reduces": 0, "all_reduce_bytes": 0, "sent_per_gpu_bytes": 0.0,
                "logits_to_rank0_bytes": 0, "token_broadcast_bytes": 0}
    all_reduces = 2 * num_layers + 1  # two per layer, and the embedding's
    all_reduce_bytes = all_reduces * num_tokens * hidden_size * dtype_bytes
    vocab_per_rank = math.ceil(vocab_size / world_size)  # the last shard is padded
    return {
        "all_reduces": all_reduces,
        "all_reduce_bytes": all_reduce_bytes,
        "sent_per_gpu_bytes": ring_bytes_sent_per_gpu(all_reduce_bytes, world_size),
        "logits_to_rank0_bytes": (world_size - 1) * num_sampled * vocab_per_rank * dtype_bytes,
        "token_broadcast_bytes": num_sampled * 8,
    }


def _layer_case(rng: random.Random) -> dict:
    return {"num_tokens": rng.choice([1, rng.randint(1, 512), rng.randint(1, 16384)]),
            "hidden_size": rng.choice([64, 896, 1024, 2048, 4096, 5120, 8192]), "dtype_bytes": rng.choice([1, 2, 4])}


def _ring_case(rng: random.Random) -> dict:
    return {"message_bytes": rng.randint(0, 2**30), "world_size": rng.choice([1, 2, 3, 4, 8, 16])}


def _step_case(rng: random.Random) -> dict:
    num_tokens = rng.randint(1, 8192)
    return {"num_layers": rng.randint(1, 80), "hidden_size": rng.choice([64, 1024, 2048, 4096, 8192]),
            "vocab_size": rng.choice([512, 32000, 128256, 151936, rng.randint(100, 200000)]),
            "num_tokens": num_tokens, "num_sampled": rng.randint(0, min(num_tokens, 512)),
            "world_size": rng.choice([1, 2, 2, 3, 4, 8]), "dtype_bytes": rng.choice([2, 2, 4])}


layer_bytes = Task(
    "ch08.layer_bytes", layer_all_reduce_bytes, _layer_case,
    hint_text="Which layers end in an all-reduce? The row-parallel ones: the attention output projection and the "
              "MLP down projection. Each all-reduces an activation of num_tokens rows of hidden_size values; the "
              "world size does not change its size.",
    edge_cases=[{"num_tokens": 1, "hidden_size": 1024, "dtype_bytes": 2},
                {"num_tokens": 256, "hidden_size": 1024, "dtype_bytes": 2}],
)

ring = Task(
    "ch08.ring", ring_bytes_sent_per_gpu, _ring_case,
    hint_text="Cut the message into N chunks. Reduce-scatter: N - 1 rounds, each GPU sends one chunk per round. "
              "All-gather: another N - 1 rounds of one chunk. With one GPU nothing moves.",
    edge_cases=[{"message_bytes": 4096, "world_size": 1}, {"message_bytes": 4096, "world_size": 2},
                {"message_bytes": 3000, "world_size": 3}, {"message_bytes": 2**20, "world_size": 8}],
)

step = Task(
    "ch08.step", step_communication, _step_case,
    hint_text="Count the all-reduces first: two per layer plus one for the embedding. The logits: every rank but 0 "
              "sends its ceil(vocab_size / world_size) columns of the sampled rows. Token ids are int64. With one "
              "rank there is no communication at all.",
    edge_cases=[
        dict(num_layers=28, hidden_size=1024, vocab_size=151936, num_tokens=256, num_sampled=256, world_size=2,
             dtype_bytes=2),
        dict(num_layers=5, hidden_size=64, vocab_size=513, num_tokens=10, num_sampled=2, world_size=2,
             dtype_bytes=4),
        dict(num_layers=28, hidden_size=1024, vocab_size=151936, num_tokens=8192, num_sampled=0, world_size=4,
             dtype_bytes=2),
        dict(num_layers=2, hidden_size=64, vocab_size=512, num_tokens=4, num_sampled=4, world_size=1,
             dtype_bytes=4),
    ],
)

TASKS = [layer_bytes, ring, step]
