"""``python -m tutorial_engine bench serve`` on a CPU: the arithmetic of its metrics,
and one small end-to-end run that starts a server per scheduling policy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tutorial_engine.__main__ import main
from tutorial_engine.bench.serving import RequestResult, ServingWorkload, arrival_times, summarize


def test_poisson_arrivals_have_the_requested_rate():
    times = arrival_times(20_000, rate=8.0, seed=0)
    gaps = np.diff(times)
    assert np.all(gaps >= 0) and times[-1] / len(times) == pytest.approx(1 / 8, rel=0.03)
    assert np.std(gaps) == pytest.approx(1 / 8, rel=0.05)  # exponential: std equals mean
    assert not arrival_times(5, math.inf, 0).any()


def test_metrics_follow_vllm_definitions():
    results = [RequestResult(10, 5, ttft=0.1, latency=0.5, itl=(0.1, 0.1, 0.1, 0.1)),
               RequestResult(20, 1, ttft=0.3, latency=0.3),
               RequestResult(30, error="HTTP 503")]
    out = summarize(results, duration=2.0)
    assert out["completed"] == 2 and out["failed"] == 1
    assert out["output_throughput"] == 3.0 and out["total_token_throughput"] == 18.0
    assert out["tpot_ms"]["mean"] == pytest.approx(100.0)  # (0.5 - 0.1) / (5 - 1); one-token outputs skipped
    assert out["ttft_ms"]["p50"] == pytest.approx(200.0) and out["itl_ms"]["p99"] == pytest.approx(100.0)
    assert out["requests"] == [[10, 5, 100.0, 500.0], [20, 1, 300.0, 300.0]]


def test_workload_is_seeded():
    workload = ServingWorkload(5, (3, 9), (2, 4), max_token_id=50)
    drawn = workload.draw()
    assert drawn == workload.draw() and all(3 <= len(p) <= 9 and 2 <= m <= 4 for p, m in drawn)


def test_bench_serve_command(tiny_checkpoints, tmp_path):
    out = tmp_path / "serving.json"
    rc = main(["bench", "serve", "--model", str(tiny_checkpoints["qwen3"]), "--num-prompts", "6",
               "--input-len", "4:60", "--output-len", "2:8", "--max-token-id", "500", "--request-rates", "40,inf",
               "--policies", "fcfs,sjf", "--max-num-seqs", "4", "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert [(r["policy"], r["request_rate"]) for r in runs] == [("fcfs", 40.0), ("fcfs", "inf"), ("sjf", 40.0),
                                                                 ("sjf", "inf")]
    lengths = [m for _, m in ServingWorkload(6, (4, 60), (2, 8), 500).draw()]
    for run in runs:
        assert run["completed"] == 6 and run["failed"] == 0
        assert sorted(r[1] for r in run["requests"]) == sorted(lengths)  # ignore_eos: every length exact
        assert run["ttft_ms"]["p50"] <= run["ttft_ms"]["p99"] and run["output_throughput"] > 0
    assert result["server"]["argv"][:2] == ["--model", str(tiny_checkpoints["qwen3"])]


def test_compare_engine_core_on_the_simulated_device(tmp_path):
    """The split-server comparison end to end (two servers, alternating rounds, each
    process's CPU and the device's busy fraction), as chapter 9's data file was made."""
    out = tmp_path / "split.json"
    rc = main(["bench", "serve", "--compare-engine-core", "--device", "sim", "--concurrency", "2",
               "--prompts-per-stream", "2", "--request-rates", "inf", "--rounds", "2", "--input-len", "4:40",
               "--output-len", "4:8", "--num-prompts", "4", "--max-num-seqs", "4", "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert "simulated NVIDIA H200" in result["machine"]
    levels = [("concurrency", 2)] * 4 + [("request_rate", "inf")] * 4
    assert [(k, r[k]) for r, (k, _) in zip(result["runs"], levels)] == levels
    # rounds alternate which server goes first, so neither always runs on a warmer machine
    assert [r["engine_core"] for r in result["runs"][:4]] == ["inproc", "process", "process", "inproc"]
    for run in result["runs"]:
        assert run["completed"] == 4 and run["failed"] == 0
        assert 0 < run["device_busy_fraction"] <= 1 and run["engine_steps"] > 0
        assert run["server_cpu_us_per_output_token"] > 0 and run["engine_cpu_ms_per_step"] > 0


def test_compare_engine_core_refuses_a_running_server(capsys):
    assert main(["bench", "serve", "--compare-engine-core", "--device", "sim", "--url", "http://127.0.0.1:1"]) != 0
    assert "drop --url" in capsys.readouterr().err


def test_the_bench_client_drops_idle_connections_before_the_server_does():
    """Equal expiries race: a pooled connection reused as the server closes it is a ReadError."""
    import uvicorn

    from tutorial_engine.bench.serving import KEEPALIVE_EXPIRY_S, client_for

    server_keepalive_s = uvicorn.Config(app=None).timeout_keep_alive  # the server keeps uvicorn's default
    assert KEEPALIVE_EXPIRY_S <= server_keepalive_s / 2
    client = client_for("http://127.0.0.1:1", {})
    assert client._transport._pool._keepalive_expiry == KEEPALIVE_EXPIRY_S  # httpx keeps it on its pool
