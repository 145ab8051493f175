"""Chapter 2 tasks: admitting requests under a token budget, and sizing the KV cache.

``admit`` is the admission rule of the engine's scheduler with chunked prefill off
(``Scheduler._schedule_waiting``, as in nano-vLLM): first come first served, each
request needs a batch slot (``max_num_seqs``), its whole prompt within the step's
token budget (``max_num_batched_tokens``) and enough free KV-cache blocks; the first
request that does not fit stops admission. The KV-cache arithmetic follows vLLM's
sizing (Kwon et al., SOSP 2023, section 2.3): every token keeps a key and a value
vector per layer per KV head.
"""

from __future__ import annotations

import random

from .task import Task


def admit(waiting: list[int], num_running: int, max_num_seqs: int, max_num_batched_tokens: int,
          num_free_blocks: int, block_size: int) -> int:
    """How many requests from the head of ``waiting`` (their prompt lengths, oldest
    first) join the running batch this step."""
    admitted = 0
    for prompt_len in waiting:
        blocks = -(-prompt_len // block_size)  # ceil: a partly filled block is still a block
        if num_running + admitted == max_num_seqs or prompt_len > max_num_batched_tokens or blocks > num_free_blocks:
            break  # first come, first served: nobody overtakes the request that does not fit
        admitted += 1
        max_num_batched_tokens -= prompt_len
        num_free_blocks -= blocks
    return admitted


def kv_cache_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes of KV cache one token occupies: a key and a value vector per KV head, per layer."""
    return 2 * num_layers * num_kv_heads * head_dim * dtype_bytes


def max_num_seqs_that_fit(gpu_memory_bytes: int, gpu_memory_utilization: float, weight_bytes: int,
                          kv_bytes_per_token: int, tokens_per_seq: int) -> int:
    """Sequences of ``tokens_per_seq`` tokens whose whole KV cache fits at once in the
    memory left after the weights, out of ``gpu_memory_utilization`` of the GPU (0 if none)."""
    kv_budget = int(gpu_memory_bytes * gpu_memory_utilization) - weight_bytes
    return max(0, kv_budget // (kv_bytes_per_token * tokens_per_seq))


def _admit_case(rng: random.Random) -> dict:
    max_num_seqs, block_size = rng.randint(1, 8), rng.choice([1, 4, 16])
    return {
        "waiting": [rng.randint(1, 200) for _ in range(rng.randint(0, 8))],
        "num_running": rng.randint(0, max_num_seqs - 1) if rng.random() < 0.9 else max_num_seqs,
        "max_num_seqs": max_num_seqs,
        "max_num_batched_tokens": rng.choice([256, 512, 1024, 2048]),
        "num_free_blocks": rng.randint(0, 1200 // block_size),
        "block_size": block_size,
    }


def _kv_bytes_case(rng: random.Random) -> dict:
    return {"num_layers": rng.randint(1, 96), "num_kv_heads": rng.choice([1, 2, 4, 8, 16, 32]),
            "head_dim": rng.choice([64, 80, 96, 128, 256]), "dtype_bytes": rng.choice([1, 2, 4])}


def _max_seqs_case(rng: random.Random) -> dict:
    return {
        "gpu_memory_bytes": rng.choice([24, 40, 48, 80, 141]) * 10**9,
        "gpu_memory_utilization": rng.choice([0.8, 0.85, 0.9, 0.95]),
        "weight_bytes": rng.randint(1, 100) * 10**9,
        "kv_bytes_per_token": kv_cache_bytes_per_token(**_kv_bytes_case(rng)),
        "tokens_per_seq": rng.choice([512, 1024, 2048, 4096, 8192, 32768]),
    }


_room = {"max_num_seqs": 8, "max_num_batched_tokens": 512, "num_free_blocks": 100, "block_size": 16}

admission = Task(
    "ch02.admit", admit, _admit_case,
    hint_text="Walk `waiting` in order, keeping the budget and the free blocks left. A prompt of n tokens needs "
              "ceil(n / block_size) blocks. Stop (break, do not skip) at the first request that lacks a batch slot, "
              "token budget or blocks.",
    edge_cases=[
        {"waiting": [300, 300, 10], "num_running": 0, **_room},  # the 2nd 300 does not fit: 10 waits behind it
        {"waiting": [256, 256, 1], "num_running": 0, **_room},  # exactly fills the budget
        {"waiting": [5, 5, 5], "num_running": 6, **_room},  # only two batch slots left
        {"waiting": [17, 17], "num_running": 0, **{**_room, "num_free_blocks": 3}},  # 17 tokens take 2 blocks
        {"waiting": [], "num_running": 0, **_room},
    ],
    num_cases=60,
)

kv_bytes = Task(
    "ch02.kv_bytes", kv_cache_bytes_per_token, _kv_bytes_case,
    hint_text="Each token stores one key and one value vector (head_dim numbers each) per KV head, in every layer.",
    edge_cases=[{"num_layers": 28, "num_kv_heads": 8, "head_dim": 128, "dtype_bytes": 2}],  # Qwen3-0.6B, bf16
)

max_seqs = Task(
    "ch02.max_seqs", max_num_seqs_that_fit, _max_seqs_case,
    hint_text="KV budget = gpu_memory_bytes * gpu_memory_utilization - weight_bytes; one sequence needs "
              "kv_bytes_per_token * tokens_per_seq bytes; round down, and never return a negative number.",
    edge_cases=[
        {"gpu_memory_bytes": 141 * 10**9, "gpu_memory_utilization": 0.9, "weight_bytes": 1_200_000_000,
         "kv_bytes_per_token": 114_688, "tokens_per_seq": 2048},  # Qwen3-0.6B on an H200
        {"gpu_memory_bytes": 24 * 10**9, "gpu_memory_utilization": 0.9, "weight_bytes": 30 * 10**9,
         "kv_bytes_per_token": 131_072, "tokens_per_seq": 1024},  # the weights alone do not fit
    ],
)

TASKS = [admission, kv_bytes, max_seqs]
