"""The HTTP server against the official ``openai`` client, on loopback, with the engine
core in its own process and with the loop in a thread (``serving_engines.py``).

Servers run in a thread of the test process (``ServerThread``), so tests can look at
the engine afterwards: no request left, every KV-cache page back.
"""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import time

import httpx
import openai
import pytest

from serving_engines import ENGINE_CORES, make_engine, wait_idle
from tutorial_engine import LLM, SamplingParams, output_processor
from tutorial_engine.detokenizer import IncrementalDetokenizer
from tutorial_engine.serving import ServerThread, build_app

CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")
PROMPTS = ["Once upon a time", "The little dog", "Lily and Ben went to the park", "One day, a cat"]


def serve(model, engine_core="process", api_key=None, max_queued_requests=None, max_body_bytes=2**20, **config):
    """The server (to enter) and its async engine."""
    async_engine, _ = make_engine(model, engine_core, max_queued_requests, **config)
    return ServerThread(build_app(async_engine, "m", api_key, max_body_bytes)), async_engine


@pytest.fixture(scope="module", params=ENGINE_CORES)
def stories_server(request, stories260k):
    server, engine = serve(stories260k, request.param, max_body_bytes=20_000)
    with server as url:
        yield url, engine


@pytest.fixture(scope="module")
def reference(stories260k):
    with LLM(str(stories260k)) as llm:
        yield llm


@pytest.fixture(scope="module")
def client(stories_server):
    return openai.OpenAI(base_url=stories_server[0] + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def chat_model(tiny_checkpoints, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat") / "qwen3-chat"
    shutil.copytree(tiny_checkpoints["qwen3"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHAT_TEMPLATE}))
    return folder


def test_completions_equal_generate(client, reference):
    params = SamplingParams(temperature=0, max_tokens=24)
    expected = reference.generate(PROMPTS[:2], params, use_tqdm=False)
    for prompt, want in zip(PROMPTS, expected):
        got = client.completions.create(model="m", prompt=prompt, max_tokens=24, temperature=0)
        assert got.choices[0].text == want["text"] and got.choices[0].finish_reason == "length"
        assert got.usage.prompt_tokens == len(want["prompt_token_ids"]) and got.usage.completion_tokens == 24
        chunks = list(client.completions.create(model="m", prompt=prompt, max_tokens=24, temperature=0,
                                                stream=True, stream_options={"include_usage": True}))
        assert "".join(c.choices[0].text for c in chunks if c.choices) == want["text"]
        assert chunks[-2].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 24
    ids = client.completions.create(model="m", prompt=expected[0]["prompt_token_ids"], max_tokens=24, temperature=0)
    assert ids.choices[0].text == expected[0]["text"]


def test_stop_strings(client, reference):
    want = reference.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=40, stop=["Lily"]),
                              use_tqdm=False)[0]
    got = client.completions.create(model="m", prompt=PROMPTS[0], max_tokens=40, temperature=0, stop=["Lily"])
    assert got.choices[0].text == want["text"] and "Lily" not in want["text"]
    assert got.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(model="m", prompt=PROMPTS[0], max_tokens=40, temperature=0,
                                            stop="Lily", stream=True))
    assert "".join(c.choices[0].text for c in chunks) == want["text"]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_aliases_health_models_metrics(stories_server, reference):
    url, _ = stories_server
    want = reference.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=8), use_tqdm=False)[0]
    body = {"prompt": PROMPTS[1], "max_tokens": 8, "temperature": 0}
    assert httpx.post(f"{url}/generate", json=body).json()["choices"][0]["text"] == want["text"]
    with httpx.stream("POST", f"{url}/generate_stream", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert "".join(json.loads(line[6:])["choices"][0]["text"] for line in lines[:-1]) == want["text"]
    assert httpx.get(f"{url}/health").status_code == 200
    assert [m["id"] for m in httpx.get(f"{url}/v1/models").json()["data"]] == ["m"]
    metrics = httpx.get(f"{url}/metrics").text
    for name in ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc",
                 "time_to_first_token_seconds_count", "time_per_output_token_seconds_count"):
        assert f"tutorial_engine_{name}" in metrics


def test_64_concurrent_streams(stories_server, reference):
    url, engine = stories_server
    prompts = [f"{PROMPTS[i % 4]} {'and ' * (i % 5)}".strip() for i in range(64)]
    lengths = [4 + i % 9 for i in range(64)]
    expected = reference.generate(prompts, [SamplingParams(temperature=0, max_tokens=n) for n in lengths],
                                  use_tqdm=False)

    async def one(client, prompt, n):
        stream = await client.completions.create(model="m", prompt=prompt, max_tokens=n, temperature=0,
                                                 stream=True)
        return "".join([chunk.choices[0].text async for chunk in stream])

    async def main():
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
            return await asyncio.gather(*(one(client, p, n) for p, n in zip(prompts, lengths)))

    texts = asyncio.run(main())
    assert texts == [e["text"] for e in expected]
    wait_idle(engine)


def test_disconnects_free_pages(stories_server):
    url, engine = stories_server
    long = {"prompt": PROMPTS[0], "max_tokens": 400, "temperature": 0, "ignore_eos": True}
    with httpx.stream("POST", f"{url}/v1/completions", json={**long, "stream": True}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        [seq] = engine.requests.values()  # the one request, mid-generation (a mirror, with the core in a process)
    wait_idle(engine)  # closing the connection aborted it
    assert seq.finish_reason == "abort" and seq.num_output_tokens < 400
    with pytest.raises(httpx.ReadTimeout):  # the non-streaming route notices a disconnect too
        httpx.post(f"{url}/v1/completions", json={**long, "max_tokens": 500}, timeout=httpx.Timeout(5, read=0.3))
    wait_idle(engine)


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions", "{not json", None),
    ("/v1/completions", [1, 2], None),
    ("/v1/completions", {"max_tokens": 4}, "prompt"),
    ("/v1/completions", {"prompt": 5}, "prompt"),
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"prompt": [1, 99999]}, "prompt"),
    ("/v1/completions", {"prompt": [1] * 600}, "prompt"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "prompt"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 600}, "max_tokens"),
    ("/v1/completions", {"prompt": "a", "max_tokens": "4"}, "max_tokens"),
    ("/v1/completions", {"prompt": "a", "max_tokens": 0}, "max_tokens"),
    ("/v1/completions", {"prompt": "a", "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "a", "top_p": 1.5}, "top_p"),
    ("/v1/completions", {"prompt": "a", "top_k": True}, "top_k"),
    ("/v1/completions", {"prompt": "a", "seed": -1}, "seed"),
    ("/v1/completions", {"prompt": "a", "stop": [""]}, "stop"),
    ("/v1/completions", {"prompt": "a", "stream": "yes"}, "stream"),
    ("/v1/completions", {"prompt": "a", "n": 2}, "n"),
    ("/v1/completions", {"prompt": "a", "best_of": 3}, "best_of"),
    ("/v1/completions", {"prompt": "a", "logprobs": 2}, "logprobs"),
    ("/v1/completions", {"prompt": "a", "echo": True}, "echo"),
    ("/v1/completions", {"prompt": "a", "frequency_penalty": 0.5}, "frequency_penalty"),
    ("/v1/completions", {"prompt": "a", "stream_options": {"include_usage": True}}, "stream_options"),
    ("/v1/completions", {"prompt": "a", "unknown_field": 1}, "unknown_field"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, "messages"),
    ("/v1/chat/completions", {"messages": []}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "tools": [{}]}, "tools"),
])
def test_bad_input_gets_400_and_the_server_goes_on(stories_server, client, path, body, param):
    url, engine = stories_server
    content = body if isinstance(body, str) else json.dumps(body)
    response = httpx.post(url + path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and error["message"]
    assert client.completions.create(model="m", prompt="Once", max_tokens=2).choices[0].text
    wait_idle(engine)


def test_other_refusals(stories_server, client):
    url, _ = stories_server
    too_big = httpx.post(f"{url}/v1/completions", json={"prompt": "a" * 30_000})
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "request_too_large"
    chunked = httpx.post(f"{url}/v1/completions", content=iter([b'{"prompt": "', b"a" * 30_000, b'"}']))
    assert chunked.status_code == 413
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="a", max_tokens=2)
    assert httpx.get(f"{url}/v1/nothing").json()["error"]["code"] == "404"
    assert client.completions.create(model="m", prompt="Once", max_tokens=2).choices[0].text


@pytest.mark.parametrize("engine_core", ENGINE_CORES)
def test_chat_through_the_template(chat_model, engine_core):
    server, engine = serve(chat_model, engine_core)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The cache"}]
    with LLM(str(chat_model)) as llm:
        prompt = llm.tokenizer(llm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                               add_special_tokens=False).input_ids
        want = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
                            use_tqdm=False)[0]
    with server as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        got = client.chat.completions.create(model="m", messages=messages, max_tokens=12, temperature=0,
                                             extra_body={"ignore_eos": True})
        assert got.choices[0].message.content == want["text"] and got.choices[0].message.role == "assistant"
        assert got.usage.prompt_tokens == len(prompt) == len(want["prompt_token_ids"]) and prompt[0] == 1
        chunks = list(client.chat.completions.create(model="m", messages=messages, max_completion_tokens=12,
                                                     temperature=0, stream=True, extra_body={"ignore_eos": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == want["text"]
        assert chunks[-1].choices[0].finish_reason == "length"
        wait_idle(engine)


def test_api_key_is_enforced(stories260k):
    server, _ = serve(stories260k, api_key="sesame")
    with server as url:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        assert httpx.post(f"{url}/v1/completions", json={"prompt": "a"}).status_code == 401
        good = openai.OpenAI(base_url=url + "/v1", api_key="sesame", max_retries=0)
        assert good.completions.create(model="m", prompt="Once", max_tokens=2).choices[0].text
        assert httpx.get(f"{url}/health").status_code == 200  # probes need no key


@pytest.mark.parametrize("engine_core", ENGINE_CORES)
def test_queue_limit_answers_503(stories260k, engine_core):
    server, engine = serve(stories260k, engine_core, max_queued_requests=2, max_num_seqs=1)
    body = {"model": "m", "prompt": "Once", "max_tokens": 60, "ignore_eos": True}

    async def main(url):
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            return await asyncio.gather(*(http.post("/v1/completions", json=body) for _ in range(12)))

    with server as url:
        responses = asyncio.run(main(url))
        codes = sorted(r.status_code for r in responses)
        assert 503 in codes and codes.count(200) >= 2, codes  # at least the queue limit gets in
        assert all(r.json()["error"]["code"] == "queue_full" for r in responses if r.status_code == 503)
        assert all(r.json()["usage"]["completion_tokens"] == 60 for r in responses if r.status_code == 200)
        wait_idle(engine)


@pytest.mark.parametrize("engine_core", ENGINE_CORES)
@pytest.mark.parametrize("overlap", [False, True])
def test_one_failing_output_fails_only_its_stream(stories260k, reference, monkeypatch, overlap, engine_core):
    """The detokenizer raising for one request mid-stream (after engine steps that
    succeeded) ends that request with the error and frees its pages; the requests
    processed in the same steps, before and after it, still get all their text."""
    async_engine, engine = make_engine(stories260k, engine_core, overlap_scheduling=overlap)
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    bad_ids = engine.tokenizer(PROMPTS[1]).input_ids

    class FailingDetokenizer(IncrementalDetokenizer):
        """Fails from the third piece of PROMPTS[1]'s output on."""

        def __init__(self, tokenizer, prompt_token_ids):
            super().__init__(tokenizer, prompt_token_ids)
            self.fails, self.calls = list(prompt_token_ids) == bad_ids, 0

        def add(self, token_ids):
            self.calls += 1
            if self.fails and self.calls >= 3:
                raise RuntimeError("detokenizer failed")
            return super().add(token_ids)

    monkeypatch.setattr(output_processor, "IncrementalDetokenizer", FailingDetokenizer)
    expected = reference.generate(PROMPTS[:3], params, use_tqdm=False)

    async def collect(stream):
        try:
            return "".join([out.text async for out in stream])
        except RuntimeError as err:
            return err

    async def main():
        async_engine.start()
        try:
            streams = [async_engine.add_request(prompt, params) for prompt in PROMPTS[:3]]
            texts = await asyncio.wait_for(asyncio.gather(*(collect(stream) for stream in streams)), timeout=30)
            await asyncio.to_thread(wait_idle, async_engine)
            assert async_engine.is_running
            return texts
        finally:
            async_engine.shutdown()

    texts = asyncio.run(main())
    assert [texts[0], texts[2]] == [expected[0]["text"], expected[2]["text"]]
    assert str(texts[1]) == "detokenizer failed"


@pytest.mark.parametrize("engine_core", ENGINE_CORES)
def test_disconnect_mid_send_aborts_without_the_garbage_collector(stories260k, engine_core):
    """A client that stops reading, then goes away: Starlette notices the disconnect
    while the response waits in ``send`` and leaves the event generator suspended. The
    request must still be aborted at once, not when (or if) the garbage collector
    finalizes the generator, so the collector is paused here."""
    async_engine, _ = make_engine(stories260k, engine_core)
    app = build_app(async_engine, "m")
    body = json.dumps({"prompt": PROMPTS[0], "max_tokens": 400, "temperature": 0, "ignore_eos": True,
                       "stream": True}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "path": "/v1/completions", "raw_path": b"/v1/completions", "root_path": "",
             "scheme": "http", "query_string": b"", "headers": [(b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2)}

    async def main():
        async_engine.start()
        first_chunk, received = asyncio.Event(), []

        async def receive():
            if not received:
                received.append(True)
                return {"type": "http.request", "body": body, "more_body": False}
            await first_chunk.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.body" and message["body"]:
                seqs.extend(async_engine.requests.values())  # the one request, mid-generation
                first_chunk.set()
                await asyncio.sleep(3600)  # the client stopped reading: the socket buffer is full

        seqs = []
        await asyncio.wait_for(app(scope, receive, send), timeout=30)
        [seq] = seqs
        deadline = time.monotonic() + 5  # in the loop: its shutdown would close the generator
        while async_engine.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(wait_idle, async_engine)
        async_engine.shutdown()
        return seq

    gc.disable()
    try:
        seq = asyncio.run(main())
        assert seq.finish_reason == "abort" and seq.num_output_tokens < 400
    finally:
        gc.enable()


@pytest.mark.parametrize("engine_core", ENGINE_CORES)
def test_metrics_count_speculative_tokens(stories260k, reference, engine_core):
    """With a draft identical to the target every proposal is accepted, and /metrics says so."""
    speculative = {"model": str(stories260k), "num_speculative_tokens": 2}
    server, engine = serve(stories260k, engine_core, speculative_config=speculative)
    want = reference.generate(PROMPTS[2], SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)[0]
    with server as url:
        body = {"prompt": PROMPTS[2], "max_tokens": 16, "temperature": 0}
        assert httpx.post(f"{url}/v1/completions", json=body).json()["choices"][0]["text"] == want["text"]
        wait_idle(engine)
        values = {line.split()[0]: float(line.split()[1]) for line in httpx.get(f"{url}/metrics").text.splitlines()
                  if line.startswith("tutorial_engine_spec_decode")}
    assert values["tutorial_engine_spec_decode_num_draft_tokens"] > 0
    assert values["tutorial_engine_spec_decode_num_accepted_tokens"] == values["tutorial_engine_spec_decode_num_draft_tokens"]
    assert values["tutorial_engine_spec_decode_num_drafts"] > 0
