"""Tensor parallelism on a CPU: two ranks (this process and one worker) over gloo.

* The sharded model generates the unsharded model's greedy tokens and transformers'
  on stories260K (8 query heads, 4 KV heads) and the tiny Qwen3 (QK-norm, tied
  embeddings), Llama (one KV head, replicated) and Qwen2 (q/k/v biases), with prefix
  caching, chunked prefill and preemption, overlap scheduling on and off.
* Each rank's weights are its slices of the checkpoint.
* No worker outlives its engine: after ``shutdown()``, ``del``, a failed step,
  Ctrl-C, a dead worker, interpreter exit or a killed engine process.
* Impossible sizes are refused before any process starts.

One sharded engine per process at a time, so each test makes and stops its own.
"""

from __future__ import annotations

import dataclasses
import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
import psutil
import pytest
import torch

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.book.tiny import write_tiny_checkpoint
from tutorial_engine.distributed import building_rank
from tutorial_engine.tp_executor import check_tensor_parallel
from tutorial_engine.loader import decoder_spec, load_hf_config, load_weights
from tutorial_engine.models import CausalLM

from reference import hf_greedy

STORY_PROMPTS = ["Once upon a time", "Lily saw a big dog", "The dog was happy. They played all day. The end.",
                 "One day, Tom and his mom went to the park. They"]
TEXT_PROMPTS = ["Hello world", "The cache is cut into pages", "A", "Requests arrive at any time and the scheduler"]
PARAMS = SamplingParams(temperature=0, max_tokens=20, ignore_eos=True)


def token_ids(outputs: list[dict]) -> list[list[int]]:
    return [o["token_ids"] for o in outputs]


def worker_pids(llm: LLM) -> list[int]:
    return [w.process.pid for w in llm.engine.executor.workers]


def assert_gone(pids: list[int], timeout: float = 10.0) -> None:
    """Every pid has exited (and been reaped), and this process has no child left."""
    deadline = time.monotonic() + timeout
    while any(_exists(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if _exists(pid)]
    assert multiprocessing.active_children() == []


def _exists(pid: int) -> bool:
    """Running, or exited but not yet reaped by its parent (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("prefix_caching", ["hash", "radix"])
def test_stories260k_two_ranks_match_one_rank_and_transformers(stories260k, prefix_caching):
    """Small pages, a 24-token budget (chunks), 30 pages (preemption); the second loop
    (overlapped) also hits the prefix cache the first one filled."""
    prompts = STORY_PROMPTS + [STORY_PROMPTS[0] + " there was"]
    params = [SamplingParams(temperature=0, max_tokens=n, stop_token_ids=[1]) for n in (40, 1, 60, 25, 50)]
    options = dict(prefix_caching=prefix_caching, kvcache_block_size=4, num_kvcache_blocks=30,
                   max_num_batched_tokens=24, max_num_seqs=4)
    one_rank = token_ids(LLM(stories260k, **options).generate(prompts, params, use_tqdm=False))
    llm = LLM(stories260k, tensor_parallel_size=2, **options)
    try:
        for overlap in (False, True):
            llm.engine.overlap_scheduling = overlap
            assert token_ids(llm.generate(prompts, params, use_tqdm=False)) == one_rank
        metrics = llm.get_metrics()
        assert metrics["num_preemptions"] > 0 and metrics["prefix_cache_hit_tokens"] > 0
        assert metrics["num_chunked_prefill_steps"] > 0
        eos = llm.engine.eos_token_ids | {1}
        for prompt, sp, ids in zip(prompts, params, one_rank):
            assert ids == hf_greedy(stories260k, llm.tokenizer(prompt).input_ids, sp.max_tokens, eos)
    finally:
        llm.shutdown()


@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen2"])
def test_tiny_models_two_ranks_match_transformers(tiny_checkpoints, arch):
    """KV cache sized from memory on each rank (the minimum wins), overlap on; a seeded
    random request samples the same tokens as with one rank (rank 0 samples)."""
    path = tiny_checkpoints[arch]
    seeded = SamplingParams(temperature=0.8, top_p=0.9, seed=7, max_tokens=12, ignore_eos=True)
    options = dict(kvcache_block_size=4, cpu_kvcache_space_gib=0.01, overlap_scheduling=True)
    expected_random = token_ids(LLM(path, **options).generate(TEXT_PROMPTS[:1], seeded, use_tqdm=False))
    llm = LLM(path, tensor_parallel_size=2, **options)
    try:
        outs = llm.generate(TEXT_PROMPTS, PARAMS, use_tqdm=False)
        for prompt, out in zip(TEXT_PROMPTS, outs):
            assert out["token_ids"] == hf_greedy(path, llm.tokenizer(prompt).input_ids, PARAMS.max_tokens)
        assert token_ids(llm.generate(TEXT_PROMPTS[:1], seeded, use_tqdm=False)) == expected_random
    finally:
        llm.shutdown()


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_each_rank_loads_its_slices(tiny_checkpoints, arch):
    """Built for rank r of 2 (no processes needed to load), every sharded weight is the
    rank's slice of the full one, and a rank holds well under the whole model."""
    path = tiny_checkpoints[arch]
    spec = decoder_spec(load_hf_config(path))
    full = CausalLM(spec)
    load_weights(full, path)
    full_params = dict(full.named_parameters())
    kv = spec.num_kv_heads * spec.head_dim
    for rank in range(2):
        with building_rank(rank, 2):
            shard = CausalLM(spec)
        load_weights(shard, path)
        params = dict(shard.named_parameters())
        assert sum(p.numel() for p in params.values()) < 0.7 * sum(p.numel() for p in full_params.values())
        attn, full_attn = shard.model.layers[0].self_attn, full.model.layers[0].self_attn
        q = spec.num_heads * spec.head_dim // 2
        qkv = full_attn.qkv_proj.weight
        kv_rows = kv // 2 if spec.num_kv_heads >= 2 else kv  # one KV head: every rank holds it
        kv_start = rank * kv_rows if spec.num_kv_heads >= 2 else 0
        full_q, full_k, full_v = qkv.split([spec.num_heads * spec.head_dim, kv, kv])
        expected = torch.cat([full_q[rank * q:(rank + 1) * q], full_k[kv_start:kv_start + kv_rows],
                              full_v[kv_start:kv_start + kv_rows]])
        assert torch.equal(attn.qkv_proj.weight, expected)
        assert torch.equal(attn.o_proj.weight, full_attn.o_proj.weight[:, rank * q:(rank + 1) * q])
        inter = spec.intermediate_size // 2
        gate, up = full.model.layers[0].mlp.gate_up_proj.weight.split(spec.intermediate_size)
        assert torch.equal(shard.model.layers[0].mlp.gate_up_proj.weight,
                           torch.cat([gate[rank * inter:(rank + 1) * inter], up[rank * inter:(rank + 1) * inter]]))
        vocab = shard.model.embed_tokens.vocab_per_rank
        rows = full.model.embed_tokens.weight[rank * vocab:(rank + 1) * vocab]
        assert torch.equal(shard.model.embed_tokens.weight[:len(rows)], rows)
        assert (shard.lm_head.weight is shard.model.embed_tokens.weight) == spec.tie_word_embeddings


# -- start-up refusals ----------------------------------------------------------------------


def test_heads_that_do_not_split_are_refused_before_any_process(stories260k, tmp_path):
    with pytest.raises(ValueError, match=r"tensor_parallel_size=3 does not divide num_attention_heads=8"):
        LLM(stories260k, tensor_parallel_size=3)
    odd = write_tiny_checkpoint(tmp_path / "odd", "qwen3", num_attention_heads=6, num_key_value_heads=3)
    with pytest.raises(ValueError, match=r"tensor_parallel_size=2 neither divides num_key_value_heads=3"):
        LLM(odd, tensor_parallel_size=2)
    assert multiprocessing.active_children() == []


def test_kv_head_rules(tiny_checkpoints):
    spec = decoder_spec(load_hf_config(tiny_checkpoints["llama"]))  # 4 query heads, 1 KV head
    check_tensor_parallel(spec, 4)  # the one KV head is replicated on 4 ranks
    with pytest.raises(ValueError, match="tensor_parallel_size=3 does not divide num_attention_heads=4"):
        check_tensor_parallel(spec, 3)
    with pytest.raises(ValueError, match="does not divide intermediate_size=130"):
        check_tensor_parallel(dataclasses.replace(spec, intermediate_size=130), 4)


def test_more_ranks_than_gpus_is_refused_before_any_process(stories260k, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"tensor_parallel_size=2 needs 2 GPUs.*has 1; lower tensor_parallel_size"):
        LLM(stories260k, tensor_parallel_size=2)
    assert multiprocessing.active_children() == []


# -- no process left behind -----------------------------------------------------------------


def test_shutdown_and_del_leave_no_process(stories260k):
    llm = LLM(stories260k, tensor_parallel_size=2)
    pids = worker_pids(llm)
    with pytest.raises(RuntimeError, match="already runs a tensor-parallel engine"):
        LLM(stories260k, tensor_parallel_size=2)
    assert len(multiprocessing.active_children()) == 1
    llm.shutdown()
    assert_gone(pids)
    with pytest.raises(RuntimeError, match="this LLM has been shut down"):
        llm.generate(STORY_PROMPTS, PARAMS, use_tqdm=False)

    llm = LLM(stories260k, tensor_parallel_size=2)  # the process group was left: a new one can start
    pids = worker_pids(llm)
    llm.generate(STORY_PROMPTS[:1], PARAMS, use_tqdm=False)
    del llm  # no gc.collect(): the last reference going is enough
    assert_gone(pids)


@pytest.mark.parametrize("error", [RuntimeError("kernel failed"), KeyboardInterrupt()])
def test_failed_step_stops_every_rank(stories260k, error):
    """A step that fails on rank 0 leaves the worker inside the step's collectives: the
    executor stops it, and later calls say so instead of hanging."""
    llm = LLM(stories260k, tensor_parallel_size=2)
    pids = worker_pids(llm)
    runner = llm.engine.executor.runner
    original, calls = runner.execute, [0]

    def execute(plan):
        calls[0] += 1
        if calls[0] == 3:
            raise error
        return original(plan)

    runner.execute = execute
    started = time.monotonic()
    with pytest.raises(type(error)):
        llm.generate(STORY_PROMPTS, PARAMS, use_tqdm=False)
    assert time.monotonic() - started < 30  # the teardown terminated the worker, not waited on a collective
    assert_gone(pids)
    with pytest.raises(RuntimeError, match=r"stopped \(a step failed.*create a new LLM"):
        llm.generate(STORY_PROMPTS, PARAMS, use_tqdm=False)
    llm.shutdown()


def test_dead_worker_is_a_clear_error(stories260k):
    llm = LLM(stories260k, tensor_parallel_size=2)
    llm.generate(STORY_PROMPTS[:1], PARAMS, use_tqdm=False)
    pid = worker_pids(llm)[0]
    os.kill(pid, signal.SIGKILL)
    llm.engine.executor.workers[0].process.join(10)
    with pytest.raises(RuntimeError, match=r"rank 1 died \(pid \d+ exited with code -9"):
        llm.generate(STORY_PROMPTS, PARAMS, use_tqdm=False)
    assert_gone([pid])


def test_worker_dying_during_a_step_is_a_clear_error(stories260k):
    """Killed while rank 0 runs a step: rank 0's collective loses its peer (gloo
    notices at once) and the error names the dead rank."""
    llm = LLM(stories260k, tensor_parallel_size=2)
    pid = worker_pids(llm)[0]
    runner = llm.engine.executor.runner
    original, calls = runner.execute, [0]

    def execute(plan):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(pid, signal.SIGKILL)
            llm.engine.executor.workers[0].process.join(10)
        return original(plan)

    runner.execute = execute
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"step failed: rank 1 died"):
        llm.generate(STORY_PROMPTS, PARAMS, use_tqdm=False)
    assert time.monotonic() - started < 60
    assert_gone([pid])


SCRIPT = textwrap.dedent("""
    import sys, time
    from tutorial_engine import LLM, SamplingParams

    if __name__ == "__main__":
        llm = LLM(sys.argv[1], tensor_parallel_size=2)
        llm.generate("Once upon a time", SamplingParams(max_tokens=4), use_tqdm=False)
        print(llm.engine.executor.workers[0].process.pid, flush=True)
        if sys.argv[2] == "wait":
            time.sleep(600)
""")


@pytest.mark.parametrize("end", ["exit", "killed"])
def test_no_worker_outlives_the_engine_process(stories260k, tmp_path, end):
    """The engine's interpreter exits without shutdown(), or is killed outright."""
    script = tmp_path / "engine_script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script), str(stories260k), "wait" if end == "killed" else "exit"],
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        pid = int(proc.stdout.readline())
        if end == "killed":
            proc.kill()
        assert proc.wait(60) == (-signal.SIGKILL if end == "killed" else 0)
    finally:
        proc.kill()
    deadline = time.monotonic() + 20
    while _exists(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _exists(pid)


def teardown_module():
    gc.collect()
    assert multiprocessing.active_children() == []
