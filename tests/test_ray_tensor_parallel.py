"""Tensor parallelism through Ray actors (``distributed_executor_backend="ray"``) on a
two-node Ray cluster stood up on this machine (``ray.cluster_utils.Cluster``, one CPU
a node: a TP=2 group's two bundles cannot share a node, so rank 1 runs on the node
this process is not on, and the ranks meet over gloo).

* Two ranks on two nodes generate the one-rank engine's greedy tokens and
  transformers' (tiny Qwen3 and Llama, float32), overlap scheduling off and on.
* A killed worker actor is a clear error before the next step; a step that fails on
  rank 0, or on the worker (its traceback reported), stops every rank.
* No actor outlives its engine: after ``shutdown()``, ``del``, a failed step, or the
  engine's interpreter exiting or being killed, Ray lists the engine's actors DEAD,
  their processes are gone and the placement group is REMOVED.

One Ray cluster for the module (about 10 s to start); each test makes its own engine.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.config import EngineConfig
from tutorial_engine.executor import InProcessExecutor

from reference import hf_greedy

ray = pytest.importorskip("ray", reason="Ray is not installed (the cluster extra: pip install -e '.[cluster]')")
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.state import list_actors, list_placement_groups  # noqa: E402

from tutorial_engine.cluster.runtime import connect  # noqa: E402

PROMPTS = ["Hello world", "The cache is cut into pages", "A", "Requests arrive at any time and the scheduler"]
PARAMS = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
OPTIONS = dict(kvcache_block_size=4, cpu_kvcache_space_gib=0.01)
RAY_TP = dict(tensor_parallel_size=2, distributed_executor_backend="ray")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # left by another module: this one needs its own two nodes
        ray.shutdown()
    two_nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    two_nodes.add_node(num_cpus=1)
    connect(two_nodes.address)
    yield two_nodes
    ray.shutdown()
    two_nodes.shutdown()


def token_ids(outputs: list[dict]) -> list[list[int]]:
    return [o["token_ids"] for o in outputs]


def engine_ranks(llm: LLM) -> tuple[list, str]:
    """The placements of the engine's worker actors and its placement group's id."""
    executor = llm.engine.executor
    return [w.placement for w in executor.workers], executor.placement_group.id.hex()


def assert_released(placements: list, pg_id: str, timeout: float = 30.0) -> None:
    """Ray lists every actor DEAD and the placement group REMOVED; the processes are gone."""
    deadline = time.monotonic() + timeout
    while True:
        actors = [list_actors(filters=[("actor_id", "=", p.actor_id)])[0].state for p in placements]
        group = list_placement_groups(filters=[("placement_group_id", "=", pg_id)])[0].state
        alive = [p.pid for p in placements if psutil.pid_exists(p.pid)
                 and psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE]
        if (actors, group, alive) == (["DEAD"] * len(placements), "REMOVED", []) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert actors == ["DEAD"] * len(placements) and group == "REMOVED" and alive == []


@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_two_ranks_on_two_nodes_match_one_rank_and_transformers(cluster, tiny_checkpoints, arch):
    path = tiny_checkpoints[arch]
    one_rank = token_ids(LLM(path, **OPTIONS).generate(PROMPTS, PARAMS, use_tqdm=False))
    llm = LLM(path, **RAY_TP, **OPTIONS)
    placements, pg_id = engine_ranks(llm)
    assert placements[0].node_id != ray.get_runtime_context().get_node_id()  # rank 1 on the other node
    for overlap in (False, True):
        llm.engine.overlap_scheduling = overlap
        assert token_ids(llm.generate(PROMPTS, PARAMS, use_tqdm=False)) == one_rank
    for prompt, ids in zip(PROMPTS, one_rank):
        assert ids == hf_greedy(path, llm.tokenizer(prompt).input_ids, PARAMS.max_tokens)
    if arch == "qwen3":
        llm.shutdown()
        with pytest.raises(RuntimeError, match="this LLM has been shut down"):
            llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    else:
        del llm  # the last reference going is enough
    assert_released(placements, pg_id)


def test_killed_worker_is_a_clear_error(cluster, tiny_checkpoints):
    llm = LLM(tiny_checkpoints["qwen3"], **RAY_TP, **OPTIONS)
    llm.generate(PROMPTS[:1], PARAMS, use_tqdm=False)
    placements, pg_id = engine_ranks(llm)
    worker = llm.engine.executor.workers[0]
    ray.kill(worker.actor)
    ray.wait([worker.watch], timeout=30)  # Ray has told this process the actor died
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"stopped \(tensor-parallel rank 1 \(pid \d+ on [\d.]+\) died "
                                           r"\(.*killed by `ray.kill`"):
        llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    assert time.monotonic() - started < 10
    assert_released(placements, pg_id)  # the executor released everything without shutdown()
    llm.shutdown()


def test_failed_step_on_rank0_stops_every_rank(cluster, tiny_checkpoints):
    """The worker is left inside the step's collectives: the executor kills it."""
    llm = LLM(tiny_checkpoints["qwen3"], **RAY_TP, **OPTIONS)
    placements, pg_id = engine_ranks(llm)
    runner = llm.engine.executor.runner
    original, calls = runner.execute, [0]

    def execute(plan):
        calls[0] += 1
        if calls[0] == 3:
            raise RuntimeError("kernel failed")
        return original(plan)

    runner.execute = execute
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="kernel failed"):
        llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    assert time.monotonic() - started < 30
    assert_released(placements, pg_id)
    with pytest.raises(RuntimeError, match=r"stopped \(a step failed.*create a new LLM"):
        llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    llm.shutdown()


def test_failed_step_on_a_worker_reports_its_traceback(cluster, tiny_checkpoints):
    """The worker's step raises; it reports and leaves, so rank 0's collective fails
    at once and the error carries the worker's own traceback."""
    llm = LLM(tiny_checkpoints["qwen3"], **RAY_TP, **OPTIONS)
    placements, pg_id = engine_ranks(llm)
    worker = llm.engine.executor.workers[0]
    ray.get(worker.actor.__ray_call__.remote(lambda self: setattr(self, "runner", None)))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)step failed: tensor-parallel rank 1 .* failed; it reported:.*"
                                           r"AttributeError: 'NoneType' object has no attribute 'launch'"):
        llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    assert time.monotonic() - started < 30
    assert_released(placements, pg_id)
    llm.shutdown()


SCRIPT = textwrap.dedent("""
    import sys, time
    from tutorial_engine import LLM, SamplingParams
    from tutorial_engine.cluster.runtime import connect

    if __name__ == "__main__":
        connect(sys.argv[2])
        llm = LLM(sys.argv[1], tensor_parallel_size=2, distributed_executor_backend="ray", cpu_kvcache_space_gib=0.01)
        llm.generate("Hello", SamplingParams(max_tokens=4), use_tqdm=False)
        executor = llm.engine.executor
        print(executor.workers[0].placement.actor_id, executor.workers[0].placement.pid,
              executor.placement_group.id.hex(), flush=True)
        if sys.argv[3] == "wait":
            time.sleep(600)
""")


@pytest.mark.parametrize("end", ["exit", "killed"])
def test_no_actor_outlives_the_engine_process(cluster, tiny_checkpoints, tmp_path, end):
    """The engine's interpreter exits without shutdown() (the finalizer runs), or is
    killed outright (Ray ends the actors and placement groups of a job whose driver died)."""
    script = tmp_path / "engine_script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_checkpoints["qwen3"]), cluster.address,
                             "wait" if end == "killed" else "exit"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        actor_id, pid, pg_id = proc.stdout.readline().split()
        if end == "killed":
            proc.kill()
        assert proc.wait(60) == (-signal.SIGKILL if end == "killed" else 0)
    finally:
        proc.kill()
    placement = argparse.Namespace(actor_id=actor_id, pid=int(pid))
    assert_released([placement], pg_id, timeout=60)


def test_one_rank_runs_in_process_without_ray_and_bad_names_are_refused(tiny_checkpoints):
    from tutorial_engine.serving.cli import add_engine_arguments, engine_options

    path = str(tiny_checkpoints["qwen3"])
    llm = LLM(path, distributed_executor_backend="ray", **OPTIONS)  # no worker to place: nothing for Ray to do
    assert isinstance(llm.engine.executor, InProcessExecutor)
    llm.shutdown()
    with pytest.raises(ValueError, match=r"distributed_executor_backend='rpc' is unknown; choose 'mp'"):
        EngineConfig(model=path, distributed_executor_backend="rpc")
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(["--tensor-parallel-size", "2", "--distributed-executor-backend", "ray"])
    assert engine_options(args) == {"tensor_parallel_size": 2, "distributed_executor_backend": "ray"}
