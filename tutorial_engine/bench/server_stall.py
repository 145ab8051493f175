"""Does one costly request stall the others? ``/health`` latency while a huge prompt is
tokenized (or refused) and a huge chat message is rendered, and a short request's
latency while a request with a maximal stop list runs beside it (issue 21's goals:
/health p99 under 50 ms, the short request within 1.5x of its latency alone).

    python -m tutorial_engine.bench.server_stall [--output result.json]

Runs on a CPU: servers on loopback with stories260K (or the package's trained model)
and the tests' tiny random Qwen3, with a chat template and, for one run, a Qwen-style
NFC normalizer, which gives no certain characters-per-token bound, so that the whole
prompt is tokenized (off the event loop) before the length check refuses it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from ..book.tiny import write_tiny_checkpoint
from ..default_model import default_model
from ..serving.limits import DEFAULT_MAX_STOP_LENGTH, DEFAULT_MAX_STOP_STRINGS

CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


def tiny_chat_model(root: Path, nfc: bool) -> Path:
    folder = write_tiny_checkpoint(root / f"qwen3-chat{'-nfc' if nfc else ''}", "qwen3")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHAT_TEMPLATE}))
    if nfc:  # as Qwen2/Qwen3's own tokenizers
        spec = json.loads((folder / "tokenizer.json").read_text())
        (folder / "tokenizer.json").write_text(json.dumps({**spec, "normalizer": {"type": "NFC"}}))
    return folder


def percentiles(values: list[float]) -> dict:
    ordered = sorted(values)
    return {"n": len(ordered), "p50_ms": 1e3 * statistics.median(ordered),
            "p99_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], "max_ms": 1e3 * ordered[-1]}


async def health_during(url: str, path: str, body: dict, repeats: int) -> dict:
    """Poll /health every 2 ms while ``body`` is posted ``repeats`` times, one after
    another (after one unmeasured warm-up); the latencies, and the big request's median
    time and status."""
    content = json.dumps(body).encode()  # encoded once: the client's own work stays out of the polls
    latencies, times = [], []
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await http.post(path, content=content, headers={"content-type": "application/json"})
        for _ in range(repeats):
            start = time.perf_counter()
            big = asyncio.ensure_future(http.post(path, content=content, headers={"content-type": "application/json"}))
            while not big.done():
                t0 = time.perf_counter()
                assert (await http.get("/health")).status_code == 200
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.002)
            response = await big
            times.append(time.perf_counter() - start)
    return {**percentiles(latencies), "request_s": statistics.median(times), "repeats": repeats,
            "request_status": response.status_code, "request_bytes": len(content)}


async def short_request(http: httpx.AsyncClient) -> float:
    t0 = time.perf_counter()
    response = await http.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 50,
                                                        "temperature": 0, "ignore_eos": True})
    assert response.status_code == 200, response.text
    return time.perf_counter() - t0


async def short_beside_stops(url: str, rounds: int) -> dict:
    """A 50-token request alone, then beside a 400-token request without stop strings
    (the cost of sharing the batch), then beside the same request with the largest stop
    list the server takes (none matching); medians over ``rounds``."""
    stops = [f"{i:02d}" + "\u2603" * (DEFAULT_MAX_STOP_LENGTH - 2) for i in range(DEFAULT_MAX_STOP_STRINGS)]
    heavy = {"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True}

    async def beside(http, body) -> float:
        task = asyncio.ensure_future(http.post("/v1/completions", json=body))
        await asyncio.sleep(0.05)  # the heavy request is running
        latency = await short_request(http)
        assert (await task).status_code == 200
        return latency

    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        await short_request(http)  # warm-up
        alone = [await short_request(http) for _ in range(rounds)]
        plain = [await beside(http, heavy) for _ in range(rounds)]
        stopped = [await beside(http, {**heavy, "stop": stops}) for _ in range(rounds)]
    a, p, s = (statistics.median(x) for x in (alone, plain, stopped))
    return {"alone_ms": 1e3 * a, "beside_no_stops_ms": 1e3 * p, "beside_max_stops_ms": 1e3 * s,
            "ratio_to_alone": s / a, "ratio_to_no_stops": s / p,
            "stop_list": f"{len(stops)} x {len(stops[0])} characters"}


@contextmanager
def serve(model: str | Path) -> Iterator[str]:
    """``python -m tutorial_engine serve`` in its own process (so this client does not
    share its interpreter) on a free loopback port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "tutorial_engine", "serve", "--model", str(model),
                                "--port", str(port), "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server for {model} did not start")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    prompt_4mb = "Once upon a time " * (4_000_000 // 17)
    message_3mb = [{"role": "user", "content": "Once upon a time " * (3_000_000 // 17)}]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with serve(default_model()) as url:
            results["health_during_4mb_prompt_precheck"] = asyncio.run(
                health_during(url, "/v1/completions", {"prompt": prompt_4mb}, 4 * args.rounds))
            results["short_request_beside_max_stop_list"] = asyncio.run(short_beside_stops(url, args.rounds))
        with serve(tiny_chat_model(root, nfc=True)) as url:
            results["health_during_4mb_prompt_tokenized"] = asyncio.run(
                health_during(url, "/v1/completions", {"prompt": prompt_4mb}, args.rounds))
            results["health_during_3mb_chat_message"] = asyncio.run(
                health_during(url, "/v1/chat/completions", {"messages": message_3mb, "max_tokens": 1}, args.rounds))
    results["model"] = Path(default_model()).name
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
