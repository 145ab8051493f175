"""The server against a user who sends too much, or none of what it should: the key on
every route that generates or describes the API, each request's cost bounded before the
engine, a schema that says what the server does, clear errors (issue 21).

In-process (Starlette's TestClient runs the app's lifespan, so the engine loop runs), with
the engine core in its own process and with the loop in a thread."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from fastapi.testclient import TestClient

from serving_engines import ENGINE_CORES, make_engine
from tutorial_engine import LLM, SamplingParams, output_processor
from tutorial_engine.config import EngineConfig
from tutorial_engine.engine import LLMEngine
from tutorial_engine.serving import build_app

KEY = "sesame"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def make_client(model, engine_core, api_key=None, **limits):
    async_engine, engine = make_engine(model, engine_core)
    return TestClient(build_app(async_engine, "m", api_key, **limits)), engine


@pytest.fixture(scope="module", params=ENGINE_CORES)
def keyed(request, stories260k):
    client, engine = make_client(stories260k, request.param, api_key=KEY)
    with client:
        yield client, engine


@pytest.fixture(scope="module", params=ENGINE_CORES)
def open_server(request, stories260k):
    client, engine = make_client(stories260k, request.param)
    with client:
        yield client, engine


class RecordingTokenizer:
    """The engine's tokenizer, noting whether an event loop ran in the thread of each
    call that encodes or renders a chat."""

    def __init__(self, tokenizer, chat_template=None):
        self._tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.calls = []  # (what, on an event loop's thread)

    def _note(self, what):
        try:
            asyncio.get_running_loop()
            self.calls.append((what, True))
        except RuntimeError:
            self.calls.append((what, False))

    def __call__(self, *args, **kwargs):
        self._note("encode")
        return self._tokenizer(*args, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        self._note("chat_template")
        return self._tokenizer.apply_chat_template(*args, chat_template=self.chat_template, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


# -- the key --------------------------------------------------------------------------------

KEYED_ROUTES = [("POST", "/v1/completions"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
                ("POST", "/generate"), ("POST", "/generate_stream"), ("GET", "/docs"), ("GET", "/redoc"),
                ("GET", "/openapi.json")]


@pytest.mark.parametrize("method, path", KEYED_ROUTES)
def test_every_generating_and_schema_route_needs_the_key(keyed, method, path):
    client, _ = keyed
    body = {"prompt": "Once", "max_tokens": 2} if method == "POST" else None
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (path, headers, response.text)
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert client.request(method, path, json=body, headers=AUTH).status_code != 401


def test_probes_stay_open(keyed):
    client, _ = keyed
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/metrics").status_code == 200


# -- cost bounded before the engine --------------------------------------------------------

def test_prompt_bound_is_sound(stories260k):
    """No text has fewer tokens than its characters over the bound (random text of the
    tokenizer's own pieces, the worst case for it, and random Unicode)."""
    from tutorial_engine.serving.tokenize import max_chars_per_token

    llm_tokenizer = LLMEngine(EngineConfig(model=str(stories260k))).tokenizer
    bound = max_chars_per_token(llm_tokenizer)
    assert bound is not None
    rng = random.Random(0)
    pieces = [p.replace("\u2581", " ") for p in llm_tokenizer.get_vocab()]
    for _ in range(200):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 50)))
        text += "".join(chr(rng.randint(32, 0x2FFF)) for _ in range(rng.randint(0, 5)))
        assert len(llm_tokenizer(text, add_special_tokens=False).input_ids) * bound >= len(text), text


def test_no_bound_where_characters_may_merge(stories260k):
    """An NFC normalizer (as in Qwen's tokenizers) composes several characters into one,
    so no characters-per-token bound is certain; the prompt is tokenized instead."""
    from tokenizers import normalizers

    from tutorial_engine.serving.tokenize import max_chars_per_token

    tokenizer = LLMEngine(EngineConfig(model=str(stories260k))).tokenizer
    tokenizer.backend_tokenizer.normalizer = normalizers.NFC()
    assert max_chars_per_token(tokenizer) is None


def test_a_prompt_too_long_for_the_context_is_refused_before_tokenizing(open_server, monkeypatch):
    client, engine = open_server
    from tutorial_engine.serving.tokenize import max_chars_per_token

    recorder = RecordingTokenizer(engine.tokenizer)
    monkeypatch.setattr(engine, "tokenizer", recorder)
    bound = max_chars_per_token(recorder._tokenizer)
    response = client.post("/v1/completions", json={"prompt": "a" * (engine.max_model_len * bound + 1)})
    assert response.status_code == 400 and response.json()["error"]["param"] == "prompt"
    assert "max_model_len" in response.json()["error"]["message"]
    assert recorder.calls == []


def test_tokenization_and_chat_templates_run_off_the_event_loop(open_server, monkeypatch):
    client, engine = open_server
    recorder = RecordingTokenizer(engine.tokenizer, chat_template=CHAT_TEMPLATE)
    monkeypatch.setattr(engine, "tokenizer", recorder)
    assert client.post("/v1/completions", json={"prompt": "Once", "max_tokens": 2}).status_code == 200
    messages = [{"role": "user", "content": "Once"}]
    assert client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2}).status_code == 200
    assert {what for what, _ in recorder.calls} == {"encode", "chat_template"}
    assert not any(on_loop for _, on_loop in recorder.calls), recorder.calls


@pytest.mark.parametrize("stop, fragment", [([str(i) for i in range(17)], "--max-stop-strings"),
                                            (["x" * 257], "--max-stop-length"), ("x" * 257, "--max-stop-length"),
                                            ("", "empty"), ([""], "empty")])
@pytest.mark.parametrize("path", ["/v1/completions", "/generate", "/generate_stream", "/v1/chat/completions"])
def test_stop_is_bounded_and_checked_the_same_everywhere(open_server, stop, fragment, path):
    client, _ = open_server
    body = ({"messages": [{"role": "user", "content": "a"}]} if "chat" in path else {"prompt": "a"})
    response = client.post(path, json={**body, "stop": stop, "max_tokens": 2})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "stop" and fragment in error["message"]


def test_sixteen_short_stops_are_served(open_server):
    client, _ = open_server
    response = client.post("/v1/completions", json={"prompt": "Once", "max_tokens": 4,
                                                    "stop": [f"zz{i}" for i in range(16)]})
    assert response.status_code == 200


def test_stop_matching_scans_only_the_tail(stories260k, monkeypatch):
    """Per step the stop-string search sees at most the longest stop string less one
    character of earlier text, plus the step's new text: its cost does not grow with
    the text already generated."""
    windows = []
    find = output_processor.find_stop

    def recording(text, stops):
        windows.append(len(text))
        return find(text, stops)

    monkeypatch.setattr(output_processor, "find_stop", recording)
    stops = ["never appears " * 3, "zqzq"]
    params = SamplingParams(temperature=0, max_tokens=300, ignore_eos=True, stop=stops)
    with LLM(str(stories260k)) as llm:
        pieces = list(llm.stream("Once upon a time", params))
        out = llm.generate("Once upon a time", params, use_tqdm=False)[0]
    assert "".join(pieces) == out["text"] and len(out["text"]) > 600
    hold_back = max(map(len, stops)) - 1
    assert len(windows) >= 2 * 300 and max(windows) <= hold_back + max(map(len, pieces)) + 16


# -- the schema ----------------------------------------------------------------------------

def test_schema_documents_what_the_server_sends(keyed):
    client, _ = keyed
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert "HTTPValidationError" not in json.dumps(schema)
    for path in ("/v1/completions", "/v1/chat/completions", "/generate", "/generate_stream"):
        responses = schema["paths"][path]["post"]["responses"]
        assert {"400", "401", "404", "413", "503"} <= set(responses) and "422" not in responses
        assert responses["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
        assert schema["paths"][path]["post"]["security"]
    for path in ("/v1/completions", "/v1/chat/completions"):
        assert set(schema["paths"][path]["post"]["responses"]["200"]["content"]) == {"application/json",
                                                                                      "text/event-stream"}
    assert set(schema["paths"]["/generate_stream"]["post"]["responses"]["200"]["content"]) == {"text/event-stream"}
    assert set(schema["paths"]["/generate"]["post"]["responses"]["200"]["content"]) == {"application/json"}
    assert "text/plain" in schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "503" in schema["paths"]["/health"]["get"]["responses"]
    assert "security" not in schema["paths"]["/health"]["get"]
    prompt = schema["components"]["schemas"]["CompletionRequest"]["properties"]["prompt"]
    assert all(branch.get("minLength", branch.get("minItems")) == 1 for branch in prompt["anyOf"])


def test_health_is_json_and_405_keeps_allow(open_server):
    client, _ = open_server
    health = client.get("/health")
    assert health.json() == {"status": "ok"} and health.headers["content-type"] == "application/json"
    wrong_method = client.get("/v1/completions")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"]["message"]


# -- clear errors -------------------------------------------------------------------------

def test_a_request_without_body_names_the_body(open_server):
    client, _ = open_server
    error = client.post("/v1/completions").json()["error"]
    assert "None" not in error["message"] and "body" in error["message"]


def test_lone_surrogates_name_the_field(open_server):
    client, _ = open_server
    for path, body, param in (("/v1/completions", '{"prompt": "a\\ud800b"}', "prompt"),
                              ("/v1/chat/completions", '{"messages": [{"role": "user", "content": "\\udfff"}]}',
                               "messages[0].content")):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and "surrogate" in error["message"]


def test_max_completion_tokens_is_named(open_server):
    client, _ = open_server
    body = {"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 0}
    assert client.post("/v1/chat/completions", json=body).json()["error"]["param"] == "max_completion_tokens"


def test_chat_without_template_says_how_to_get_one(open_server):
    client, _ = open_server
    error = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}]}).json()["error"]
    assert "/v1/completions" in error["message"] and "chat_template" in error["message"] and "--chat-template" in error["message"]
