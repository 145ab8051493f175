"""Data-parallel replicas on Ray Serve (``tutorial_engine/cluster``, chapter 11): the same
greedy text as one engine, the same routes and key as the single server, a killed
replica replaced while the others answer, and nothing left running after shutdown.

One local Ray instance serves the module (starting Ray costs seconds); each test deploys
its own replicas of the tiny random checkpoint on the CPU."""

from __future__ import annotations

import asyncio
import time

import pytest

ray = pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")

from openai import OpenAI  # noqa: E402

from tutorial_engine import LLM, SamplingParams  # noqa: E402
from tutorial_engine.book.tiny import tiny_model_path  # noqa: E402
from tutorial_engine.cluster.replica_set import ReplicaSet, deploy  # noqa: E402
from tutorial_engine.config import EngineConfig  # noqa: E402
from tutorial_engine.serving import ServerThread, build_app  # noqa: E402
from tutorial_engine.serving.async_engine import EngineDeadError  # noqa: E402

PROMPTS = ["Once upon a time", "The cat sat on", "Once upon a time there", "A story about"]


@pytest.fixture(scope="module")
def cluster():
    from tutorial_engine.cluster.runtime import connect

    connect(num_cpus=2)
    yield ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def config():
    return EngineConfig(model=str(tiny_model_path()), device="cpu", dtype="float32", prefix_caching="radix")


def replica_actor(replicas: ReplicaSet, replica_id: str):
    return ray.get_actor(f"SERVE_REPLICA::{replicas.app_name}#EngineReplica#{replica_id}", namespace="serve")


async def generate(replicas: ReplicaSet, prompt, params: SamplingParams) -> str:
    return "".join([out.text async for out in replicas.add_request(prompt, params)])


def test_two_replicas_give_one_engines_greedy_text_through_the_same_server(cluster, config):
    from ray import serve

    params = SamplingParams(temperature=0.0, max_tokens=12)
    expected = [out["text"] for out in LLM(config.model, dtype="float32").generate(PROMPTS * 2, params)]
    replicas = ReplicaSet(deploy(config, 2, "power_of_two", cpus_per_replica=0.5), config)
    try:
        async def all_of_them():
            return await asyncio.gather(*(generate(replicas, p, params) for p in PROMPTS * 2))

        assert asyncio.run(all_of_them()) == expected
        # Both replicas serve. This process's router learns the replicas by long poll, so right
        # after deployment it may know one; later rounds reach both (CI once saw all 8 on one).
        for _ in range(10):
            if len(replicas.requests_per_replica) == 2:
                break
            assert asyncio.run(all_of_them()) == expected
        assert len(replicas.requests_per_replica) == 2, replicas.requests_per_replica
        # The engine's front end is the only HTTP server: no Ray Serve proxy holding port 8000.
        assert serve.status().proxies == {}
        with ServerThread(build_app(replicas, "m", api_key="k")) as url:
            client = OpenAI(base_url=f"{url}/v1", api_key="k")
            reply = client.completions.create(model="m", prompt=PROMPTS[0], max_tokens=12, temperature=0)
            assert reply.choices[0].text == expected[0]
            with pytest.raises(Exception, match="401"):
                OpenAI(base_url=f"{url}/v1", api_key="wrong").models.list()
    finally:
        replicas.shutdown()


def test_prefix_affinity_sends_a_shared_prefix_to_one_replica(cluster, config):
    replicas = ReplicaSet(deploy(config, 2, "prefix_affinity", {"block_size": config.kvcache_block_size},
                                 cpus_per_replica=0.5), config)
    system = list(range(1, 4 * config.kvcache_block_size + 1))
    params = SamplingParams(temperature=0.0, max_tokens=2)
    try:
        async def one_after_another():
            for i in range(6):
                await generate(replicas, system + [100 + i], params)

        asyncio.run(one_after_another())
        assert list(replicas.requests_per_replica.values()) == [6]
    finally:
        replicas.shutdown()


def test_a_killed_replica_ends_its_streams_with_an_error_and_is_replaced(cluster, config):
    from ray import serve

    replicas = ReplicaSet(deploy(config, 2, "power_of_two", cpus_per_replica=0.5), config)
    long = SamplingParams(temperature=0.0, max_tokens=480, ignore_eos=True)  # seconds of decode
    short = SamplingParams(temperature=0.0, max_tokens=4)
    try:
        async def kill_mid_stream():
            stream = replicas.add_request(PROMPTS[0], long)
            chunks = aiter(stream)
            await anext(chunks)  # it runs on some replica now
            (victim,) = replicas.requests_per_replica
            ray.kill(replica_actor(replicas, victim), no_restart=True)
            with pytest.raises(EngineDeadError, match="replica"):
                async with asyncio.timeout(30):
                    async for _ in chunks:
                        pass
            return victim

        victim = asyncio.run(kill_mid_stream())
        # The survivor answers at once; Serve starts a replacement in the background.
        assert asyncio.run(generate(replicas, PROMPTS[1], short))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = serve.status().applications[replicas.app_name].deployments["EngineReplica"].replica_states
            if running.get("RUNNING", 0) == 2:
                break
            time.sleep(0.5)
        assert running.get("RUNNING", 0) == 2, running
        with pytest.raises(ValueError):
            replica_actor(replicas, victim)
    finally:
        replicas.shutdown()


def test_after_shutdown_no_replica_is_left(cluster, config):
    replicas = ReplicaSet(deploy(config, 2, "prefix_affinity", cpus_per_replica=0.5), config)
    asyncio.run(generate(replicas, PROMPTS[0], SamplingParams(temperature=0.0, max_tokens=2)))
    (replica_id,) = replicas.requests_per_replica
    replicas.shutdown()
    with pytest.raises(ValueError):
        replica_actor(replicas, replica_id)
    with pytest.raises(EngineDeadError, match="shut down"):
        asyncio.run(generate(replicas, PROMPTS[0], SamplingParams(max_tokens=2)))


def test_bad_replica_counts_and_routers_are_refused_before_any_work(config):
    with pytest.raises(ValueError, match="data_parallel_size=0"):
        deploy(config, 0)
    with pytest.raises(ValueError, match="router='random'"):
        deploy(config, 2, "random")
