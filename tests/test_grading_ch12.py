"""Chapter 12's graded tasks, both ways (the reference passes; a stub is "not attempted";
known-wrong answers fail), and the references agree with the engine's roofline model."""

from __future__ import annotations

import math
import random

import pytest

from tutorial_engine.bench.roofline import DeviceCeilings, matmul_params, workload_roofline
from tutorial_engine.bench.workloads import Requests, make_requests
from tutorial_engine.book.grading import ch12
from tutorial_engine.models import DecoderSpec

from grading_both_ways import assert_graded_both_ways


def _spec(shape: dict) -> DecoderSpec:
    return DecoderSpec("Qwen3ForCausalLM", shape["vocab_size"], shape["hidden_size"], shape["intermediate_size"],
                       shape["num_layers"], shape["num_heads"], shape["num_kv_heads"], shape["head_dim"], 1e-6,
                       1e6, None, 4096, False, True, True)


def _no_gqa(shape, dtype_bytes):  # k and v as wide as q
    return ch12.weight_bytes({**shape, "num_kv_heads": shape["num_heads"]}, dtype_bytes)


def _no_head(shape, dtype_bytes):
    return ch12.weight_bytes(shape, dtype_bytes) - shape["vocab_size"] * shape["hidden_size"] * dtype_bytes


def _with_embedding(shape, dtype_bytes):  # the lookup table read whole, as if it were a matmul
    return ch12.weight_bytes(shape, dtype_bytes) + shape["vocab_size"] * shape["hidden_size"] * dtype_bytes


def _weights_per_token(shape, prompt_lens, output_lens, dtype_bytes, bandwidth):
    """Reads the weights once per generated token instead of once per batched step."""
    kv = 2 * shape["num_layers"] * shape["num_kv_heads"] * shape["head_dim"] * dtype_bytes
    context = sum(p * (n - 1) + n * (n - 1) // 2 for p, n in zip(prompt_lens, output_lens))
    tokens = sum(n - 1 for n in output_lens)
    return sum(output_lens) / ((tokens * ch12.weight_bytes(shape, dtype_bytes) + context * kv) / bandwidth)


def _no_kv(shape, prompt_lens, output_lens, dtype_bytes, bandwidth):
    steps = max(output_lens) - 1
    return sum(output_lens) / (steps * ch12.weight_bytes(shape, dtype_bytes) / bandwidth)


def _final_length_every_step(shape, prompt_lens, output_lens, dtype_bytes, bandwidth):
    kv = 2 * shape["num_layers"] * shape["num_kv_heads"] * shape["head_dim"] * dtype_bytes
    context = sum((p + n) * (n - 1) for p, n in zip(prompt_lens, output_lens))
    steps = max(output_lens) - 1
    return sum(output_lens) / ((steps * ch12.weight_bytes(shape, dtype_bytes) + context * kv) / bandwidth)


WRONG = {
    "ch12.weights": [_no_gqa, _no_head, _with_embedding],
    "ch12.roofline": [_weights_per_token, _no_kv, _final_length_every_step],
}


def test_every_task_has_known_wrong_answers():
    assert {task.name for task in ch12.TASKS} == set(WRONG)


@pytest.mark.parametrize("task", ch12.TASKS, ids=lambda t: t.name)
def test_task_graded_both_ways(task):
    assert_graded_both_ways(task, WRONG[task.name])


def test_references_match_the_engines_roofline():
    rng = random.Random(1)
    unlimited = DeviceCeilings(bandwidth=1.0, matmul_flops=math.inf)  # bytes count, FLOPs free
    for _ in range(30):
        case = ch12._roofline_case(rng)
        spec = _spec(case["shape"])
        layer, head = matmul_params(spec)
        assert ch12.weight_bytes(case["shape"], case["dtype_bytes"]) == (spec.num_layers * layer + head) * case[
            "dtype_bytes"]
        requests = Requests(None, [[0] * p for p in case["prompt_lens"]], case["output_lens"])
        bound = workload_roofline(spec, requests, case["dtype_bytes"], unlimited)
        seconds = bound.decode_time_s / case["bandwidth"]
        assert math.isclose(ch12.decode_roofline_tok_s(**case), sum(case["output_lens"]) / seconds, rel_tol=1e-9)


def test_the_chapters_workload_is_decode_bound_near_its_roofline():
    requests = make_requests("nanovllm")
    tok_s = ch12.decode_roofline_tok_s(ch12.QWEN3_0_6B, [len(p) for p in requests.prompts], requests.max_tokens,
                                       2, 4.15e12)
    full = workload_roofline(_spec(ch12.QWEN3_0_6B), requests, 2, DeviceCeilings(4.15e12, 774e12)).tok_s
    assert full < tok_s < 1.1 * full  # prefill adds a few percent to the decode-only bound
