"""The engine core in its own process (``serving/engine_core.py``, ``serving/async_llm.py``):
its messages, and a lifecycle you can trust: a core that dies turns into 503s and
ended streams, the core never outlives the server, and stopping the server (SIGTERM,
Ctrl-C) or the engine leaves no process, socket file or folder behind.

Greedy text through the split server equals ``LLM.generate``: ``test_serving.py`` runs
every server test against both engines (``serving_engines.py``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
import psutil
import pytest

from tutorial_engine import SamplingParams
from tutorial_engine.config import EngineConfig
from tutorial_engine.serving import AsyncLLM, ServerThread, build_app
from tutorial_engine.serving.messages import (AbortRequests, CoreInput, CoreOutput, EngineCoreOutput,
                                              EngineCoreOutputs, EngineCoreRequest, EngineStats)

LONG = {"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0, "ignore_eos": True, "stream": True}


def descendants() -> set[int]:
    """This process's live descendants, less multiprocessing's resource tracker (one per
    interpreter, started by the first spawn, kept for the session)."""
    alive = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                alive.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def gone(pids, timeout: float = 20.0) -> bool:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def test_messages_are_typed_msgpack():
    request = EngineCoreRequest(7, [1, 2, 3], SamplingParams(temperature=0, stop=["x"], stop_token_ids=[2]))
    wire = msgspec.msgpack.encode(request)
    assert msgspec.msgpack.decode(wire, type=CoreInput) == request
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(AbortRequests([7])), type=CoreInput) == AbortRequests([7])
    outputs = EngineCoreOutputs([EngineCoreOutput(7, [5, 6], "length", 0)], EngineStats(num_steps=3))
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(outputs), type=CoreOutput) == outputs
    bad = wire.replace(b"\xabtemperature\xcb\x00\x00\x00\x00\x00\x00\x00\x00", b"\xabtemperature\xff")
    with pytest.raises(msgspec.ValidationError, match="temperature"):  # SamplingParams' checks run on decoding
        msgspec.msgpack.decode(bad, type=CoreInput)
    with pytest.raises(msgspec.ValidationError):  # an output is not an input
        msgspec.msgpack.decode(msgspec.msgpack.encode(outputs), type=CoreInput)


def test_a_stop_token_outside_the_vocabulary_is_a_400(stories260k):
    """It could never be sampled, and MessagePack cannot carry ints above 2**64 - 1 (a
    500 before this check)."""
    engine = AsyncLLM(EngineConfig(model=str(stories260k)))
    with ServerThread(build_app(engine, "m")) as url:
        for token in (engine.vocab_size, 2**70):
            response = httpx.post(f"{url}/v1/completions", json={"prompt": "a", "stop_token_ids": [token]})
            assert response.status_code == 400 and response.json()["error"]["param"] == "stop_token_ids"
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "a", "max_tokens": 2}).status_code == 200


def test_a_start_up_error_is_the_engines_and_leaves_nothing(stories260k):
    before = descendants()
    with pytest.raises(ValueError, match="max_model_len"):
        AsyncLLM(EngineConfig(model=str(stories260k), max_model_len=10**6))
    assert gone(descendants() - before)


def test_a_killed_core_ends_streams_and_fails_health(stories260k):
    engine = AsyncLLM(EngineConfig(model=str(stories260k)))
    core = engine.core.process.pid
    with ServerThread(build_app(engine, "m")) as url:
        with httpx.stream("POST", f"{url}/v1/completions", json=LONG, timeout=10) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: {")
            os.kill(core, signal.SIGKILL)
            killed = time.monotonic()
            while httpx.get(f"{url}/health").status_code == 200:
                assert time.monotonic() - killed < 1.0, "/health still answers 200 a second after the core died"
                time.sleep(0.01)
            assert httpx.get(f"{url}/health").json() == {"status": "unavailable"}
            rest = [line for line in lines if line]  # a hang would fail on the read timeout
        assert '"error"' in rest[-2] and "engine core process exited" in rest[-2] and rest[-1] == "data: [DONE]"
        refused = httpx.post(f"{url}/v1/completions", json={**LONG, "stream": False})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "engine_dead"
    assert gone([core]) and not Path(engine.core.folder).exists()


def test_restarts_leave_no_process_or_socket(stories260k):
    before = descendants()
    folders = []
    for _ in range(2):
        engine = AsyncLLM(EngineConfig(model=str(stories260k)))
        folders.append(engine.core.folder)
        assert {p.name for p in Path(engine.core.folder).iterdir()} == {"input", "output"}  # the ipc:// files
        with ServerThread(build_app(engine, "m")) as url:
            body = {"prompt": "Once", "max_tokens": 4, "temperature": 0}
            assert httpx.post(f"{url}/v1/completions", json=body, timeout=30).status_code == 200
        assert descendants() == before
    assert not any(Path(folder).exists() for folder in folders)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model) -> tuple[subprocess.Popen, str, list[int]]:
    """``python -m tutorial_engine serve`` in its own session (as a terminal's foreground
    job); returns it, its URL and its descendants once it answers /health."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tutorial_engine", "serve", "--model", str(model), "--port",
                               str(port), "--log-level", "warning"], start_new_session=True,
                              cwd=Path(__file__).parents[1])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None and time.monotonic() < deadline, "the server did not come up"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    children = [p.pid for p in psutil.Process(server.pid).children(recursive=True)]
    return server, url, children


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_the_server_stops_with_its_core(stories260k, how):
    server, url, children = start_server(stories260k)
    try:
        assert children  # the engine core (and multiprocessing's resource tracker)
        with httpx.stream("POST", f"{url}/v1/completions", json=LONG, timeout=30) as response:
            assert next(response.iter_lines()).startswith("data: {")  # a stream is open
            if how == "SIGTERM":
                server.send_signal(signal.SIGTERM)
            else:  # a terminal's Ctrl-C: SIGINT to the whole foreground group
                os.killpg(server.pid, signal.SIGINT)
            code = server.wait(timeout=60)
        assert gone(children)
        assert code in (0, -signal.SIGTERM, -signal.SIGINT, 130), code  # uvicorn re-raises the signal once shut down
    finally:
        server.kill()


def socket_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("tutorial-engine-*"))


def test_the_core_does_not_outlive_a_killed_server(stories260k):
    before = socket_folders()
    server, _, children = start_server(stories260k)
    try:
        assert len(socket_folders() - before) == 1
        server.kill()  # SIGKILL: no clean-up runs in the server
        server.wait()
        assert gone(children)
        assert socket_folders() <= before  # the core removed the dead server's socket files
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
