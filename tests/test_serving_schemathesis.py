"""Schemathesis (the OpenAPI fuzzer) against a keyed server on loopback: every
operation of the document, a bounded, seeded number of generated requests each (valid
and invalid ones), its default checks (no 5xx, statuses, content types, headers and
bodies as documented, invalid data refused, valid data accepted) and its check that a
keyed operation refuses requests without the key or with a wrong one (``ignored_auth``).
The one exception: valid fields whose token counts together exceed the context, which no
JSON Schema can state, may get the documented 400 ``context_length_exceeded``.
"""

from __future__ import annotations

import json
import shutil

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from tutorial_engine.config import EngineConfig  # noqa: E402
from tutorial_engine.serving import AsyncLLM, ServerThread, build_app  # noqa: E402

KEY = "sesame"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
EXAMPLES = 40  # per operation and mode (valid, invalid); seeded (derandomize), so every run sends the same requests


@pytest.fixture(scope="module")
def server_url(tiny_checkpoints, tmp_path_factory):
    """A random tiny Qwen3 with a chat template (so chat requests are served too) and a
    short context (so the longest generated request stays quick)."""
    folder = tmp_path_factory.mktemp("fuzz") / "qwen3-chat"
    shutil.copytree(tiny_checkpoints["qwen3"], folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHAT_TEMPLATE}))
    engine = AsyncLLM(EngineConfig(model=str(folder), max_model_len=64))  # the engine core in its own process
    with ServerThread(build_app(engine, "m", KEY)) as url:
        yield url


def valid_data_accepted_unless_too_long(ctx, response, case):
    """Schemathesis' ``positive_data_acceptance``, except for a prompt and max_tokens
    over the context together: a bound on a sum of token counts, which no JSON Schema
    can state (documented as a 400 with OpenAI's code ``context_length_exceeded``)."""
    if response.status_code == 400 and response.json()["error"]["code"] == "context_length_exceeded":
        return None
    return positive_data_acceptance(ctx, response, case)


def test_every_operation(server_url):
    schema = schemathesis.openapi.from_url(f"{server_url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "GET /health", "GET /metrics", "GET /v1/models", "POST /v1/completions", "POST /v1/chat/completions",
        "POST /generate", "POST /generate_stream"}
    # ignored_auth tests the operations that declare the key; every one but the probes must
    keyless = {f"{method.upper()} {path}" for path, item in schema.raw_schema["paths"].items()
               for method, operation in item.items() if not operation.get("security")}
    assert keyless == {"GET /health", "GET /metrics"}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(operation.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance],
                                       additional_checks=[valid_data_accepted_unless_too_long])

            try:
                check()
            except Unsatisfiable:  # no invalid request exists for an operation without inputs
                assert mode == GenerationMode.NEGATIVE and operation.method == "get"
