"""The benchmark path on a CPU: workload draws, the roofline arithmetic, and one
small end-to-end ``python -m tutorial_engine bench`` run writing its JSON."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from tutorial_engine.__main__ import main
from tutorial_engine.bench.models import architecture_folder
from tutorial_engine.bench.roofline import DeviceCeilings, matmul_params, workload_roofline
from tutorial_engine.bench.workloads import WORKLOADS, Requests, make_requests
from tutorial_engine.loader import decoder_spec, load_hf_config


def nano_vllm_order(seed=0, num_seqs=256):
    """nano-vLLM bench.py's draws: all prompts (length, then tokens), then all output lengths."""
    random.seed(seed)
    prompts = [[random.randint(0, 10000) for _ in range(random.randint(100, 1024))] for _ in range(num_seqs)]
    outputs = [random.randint(100, 1024) for _ in range(num_seqs)]
    return prompts, outputs


def test_nanovllm_workload_reproduces_the_documented_totals():
    requests = make_requests("nanovllm")
    prompts, outputs = nano_vllm_order()
    assert requests.prompts == prompts and requests.max_tokens == outputs
    assert requests.num_output_tokens == 133_966 and requests.num_prompt_tokens == 142_827
    params = requests.sampling_params()
    assert all(p.temperature == 0.6 and p.ignore_eos for p in params)
    assert [p.max_tokens for p in params] == outputs


def test_a_changed_draw_order_is_caught():
    # Output lengths drawn right after each prompt (a plausible mistake) give another total.
    random.seed(0)
    interleaved = 0
    for _ in range(256):
        [random.randint(0, 10000) for _ in range(random.randint(100, 1024))]
        interleaved += random.randint(100, 1024)
    assert interleaved != 133_966
    wrong = dataclasses.replace(WORKLOADS["nanovllm"], seed=1)
    with pytest.raises(ValueError, match="133966"):
        make_requests(wrong)


def test_subset_and_bad_names():
    requests = make_requests("nanovllm").subset(16)
    assert len(requests.prompts) == 16 and requests.max_tokens == make_requests("nanovllm").max_tokens[:16]
    with pytest.raises(ValueError, match="num_seqs=0"):
        requests.subset(0)
    with pytest.raises(ValueError, match="unknown"):
        make_requests("sharegpt")
    with pytest.raises(ValueError, match="unknown"):
        architecture_folder("llama-70b")


def test_qwen3_0_6b_architecture_has_0_6b_parameters(tmp_path):
    spec = decoder_spec(load_hf_config(architecture_folder("qwen3-0.6b", tmp_path)))
    layer, head = matmul_params(spec)
    assert (spec.num_layers, spec.num_heads, spec.num_kv_heads, spec.head_dim) == (28, 16, 8, 128)
    # 0.44 B in the layers' matrices + 0.16 B in the (tied) embedding = Qwen3-0.6B's 0.6 B.
    assert 0.59e9 < spec.num_layers * layer + head < 0.61e9


def test_roofline_matches_a_step_by_step_count(tmp_path):
    spec = decoder_spec(load_hf_config(architecture_folder("qwen3-0.6b", tmp_path)))
    workload = WORKLOADS["smoke"]
    requests = Requests(workload, [[1] * 5, [1] * 2], [3, 1])
    ceilings = DeviceCeilings(bandwidth=1e12, matmul_flops=1e15)
    roof = workload_roofline(spec, requests, 2, ceilings)
    kv_token = 2 * 28 * 8 * 128 * 2
    # Request 0 decodes tokens 2 and 3 over contexts of 6 and 7 tokens; request 1 only prefills.
    assert roof.decode_steps == 2
    assert roof.decode_kv_bytes == (6 + 7) * kv_token
    assert roof.decode_weight_bytes == 2 * roof.weight_bytes
    expected_decode = (roof.decode_weight_bytes + roof.decode_kv_bytes) / 1e12
    assert roof.decode_time_s == pytest.approx(max(expected_decode, roof.decode_flops / 1e15))
    assert roof.tok_s == pytest.approx(4 / roof.time_s)


def test_bench_command_writes_consistent_json(tiny_checkpoints, tmp_path):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--workload", "smoke", "--model", str(tiny_checkpoints["qwen3"]), "--max-num-seqs", "4",
               "--max-num-batched-tokens", "64", "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    requests = make_requests("smoke")
    assert result["output_tokens"] == requests.num_output_tokens and result["num_seqs"] == 8
    engine = result["engine"]
    counters, steps = engine["counters"], engine["steps"]
    # Every prompt token is prefilled once; every output token after the first is a decode token.
    assert counters["num_prefill_tokens"] == requests.num_prompt_tokens
    assert counters["num_decode_tokens"] == requests.num_output_tokens - 8
    assert steps["num_steps"] == counters["num_steps"] == len(engine["step_series"]["wall_ms"])
    assert max(engine["step_series"]["num_seqs"]) == 4
    assert engine["output_tok_s"] == pytest.approx(requests.num_output_tokens / engine["time_s"])
    assert engine["config"]["max_num_seqs"] == 4 and engine["cuda_graphs"] is False
    assert result["environment"]["torch"] and "roofline" not in result  # no GPU: no roofline


def test_environment_records_the_command_that_ran(monkeypatch):
    import sys
    import types

    import torch

    from tutorial_engine.bench.environment import environment, invocation

    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="tutorial_engine.experiments.overlap")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["/x/overlap.py", "--out", "book/data/a b.json"])
    assert invocation() == "python -m tutorial_engine.experiments.overlap --out 'book/data/a b.json'"
    main.__spec__ = types.SimpleNamespace(name="tutorial_engine.__main__")
    monkeypatch.setattr(sys, "argv", ["x", "bench", "--rounds", "3"])
    assert environment(torch.device("cpu"))["command"] == "python -m tutorial_engine bench --rounds 3"
