"""Chapter 12 tasks: the fastest any engine could run a workload, from the model's shape
and the GPU's memory bandwidth (the decode roofline).

The references follow ``tutorial_engine/bench/roofline.py`` (Williams, Waterman &
Patterson, "Roofline", CACM 2009): ``tests/test_grading_ch12.py`` checks them against
``workload_roofline``, the model chapter 12 reports.
"""

from __future__ import annotations

import random

from .task import Task

SHAPE_KEYS = ("num_layers", "hidden_size", "intermediate_size", "num_heads", "num_kv_heads", "head_dim",
              "vocab_size")


def weight_bytes(shape: dict, dtype_bytes: int) -> int:
    """Bytes of the matrices a decode step reads once: per layer the q, k, v and o
    projections and the three MLP matrices (gate, up, down), plus the output head.
    The embedding table is not read whole (a lookup reads only its rows)."""
    q = shape["num_heads"] * shape["head_dim"]
    kv = shape["num_kv_heads"] * shape["head_dim"]
    h = shape["hidden_size"]
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * shape["intermediate_size"]
    return (shape["num_layers"] * per_layer + shape["vocab_size"] * h) * dtype_bytes


def decode_roofline_tok_s(shape: dict, prompt_lens: list[int], output_lens: list[int], dtype_bytes: int,
                          bandwidth: float) -> float:
    """Output tokens per second if decoding did nothing but read memory at ``bandwidth``
    bytes/s: every step reads the weights once (shared by the batch) and each running
    request's K/V; the first output token of each request comes from its prefill."""
    steps = max(output_lens) - 1  # all requests decode together; the longest sets the count
    kv_per_token = 2 * shape["num_layers"] * shape["num_kv_heads"] * shape["head_dim"] * dtype_bytes
    # Request (p, n) decodes n - 1 tokens; its j-th decode step reads p + j cached tokens.
    context = sum(p * (n - 1) + n * (n - 1) // 2 for p, n in zip(prompt_lens, output_lens))
    seconds = (steps * weight_bytes(shape, dtype_bytes) + context * kv_per_token) / bandwidth
    return sum(output_lens) / seconds


QWEN3_0_6B = {"num_layers": 28, "hidden_size": 1024, "intermediate_size": 3072, "num_heads": 16,
              "num_kv_heads": 8, "head_dim": 128, "vocab_size": 151936}
LLAMA3_8B = {"num_layers": 32, "hidden_size": 4096, "intermediate_size": 14336, "num_heads": 32,
             "num_kv_heads": 8, "head_dim": 128, "vocab_size": 128256}


def _shape(rng: random.Random) -> dict:
    kv_heads = rng.choice([1, 2, 4, 8])
    head_dim = rng.choice([64, 128])
    heads = kv_heads * rng.choice([1, 2, 4])
    return {"num_layers": rng.randint(1, 48), "hidden_size": 64 * rng.randint(1, 64),
            "intermediate_size": 128 * rng.randint(1, 100), "num_heads": heads, "num_kv_heads": kv_heads,
            "head_dim": head_dim, "vocab_size": rng.randint(1000, 160000)}


def _weights_case(rng: random.Random) -> dict:
    return {"shape": _shape(rng), "dtype_bytes": rng.choice([1, 2, 4])}


def _roofline_case(rng: random.Random) -> dict:
    n = rng.randint(1, 40)
    return {"shape": _shape(rng), "prompt_lens": [rng.randint(1, 2000) for _ in range(n)],
            "output_lens": [rng.randint(2, 1000) for _ in range(n)], "dtype_bytes": rng.choice([1, 2, 4]),
            "bandwidth": rng.choice([0.5e12, 1.0e12, 2.0e12, 3.35e12, 4.15e12, 4.8e12, 8.0e12])}


weights = Task(
    "ch12.weights", weight_bytes, _weights_case,
    hint_text="Per layer: q has num_heads * head_dim columns, k and v num_kv_heads * head_dim each (GQA), "
              "o maps q back to hidden; the MLP has three hidden x intermediate matrices. Add the output head "
              "(vocab_size x hidden) once, then multiply the parameter count by dtype_bytes.",
    edge_cases=[{"shape": QWEN3_0_6B, "dtype_bytes": 2}, {"shape": LLAMA3_8B, "dtype_bytes": 2}],
)

roofline = Task(
    "ch12.roofline", decode_roofline_tok_s, _roofline_case,
    hint_text="Decode steps = max(output_lens) - 1, each reading weight_bytes once. K/V bytes per cached token are "
              "2 x layers x kv_heads x head_dim x dtype_bytes; a request with prompt p and n outputs reads p + 1, "
              "p + 2, ..., p + n - 1 cached tokens in its n - 1 decode steps. Seconds = all bytes / bandwidth; "
              "return sum(output_lens) / seconds.",
    edge_cases=[
        {"shape": QWEN3_0_6B, "prompt_lens": [100], "output_lens": [2], "dtype_bytes": 2, "bandwidth": 4.15e12},
        {"shape": QWEN3_0_6B, "prompt_lens": [1000, 10, 10], "output_lens": [10, 500, 20], "dtype_bytes": 2,
         "bandwidth": 4.15e12},
    ],
)

TASKS = [weights, roofline]
