"""The OpenAPI document, made to say what the server does.

FastAPI derives the document from the routes and the request models. What it cannot
know is added here: the bounds that depend on the model and the server's flags (token
ids below the vocabulary size, the stop list's limits, ``max_tokens`` below the
context), the only values accepted for fields the server does not implement; and what
it documents wrongly is removed: its 422 responses (this server reports every invalid
request as 400 in OpenAI's format).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .limits import ServerLimits
from .protocol import UNSUPPORTED


def install_openapi(app: FastAPI, limits: ServerLimits, vocab_size: int, max_model_len: int) -> None:
    """Replace ``app.openapi`` by one building (once) the document described above."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description=app.description)
            _tidy(schema, limits, vocab_size, max_model_len)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def _tidy(schema: dict, limits: ServerLimits, vocab_size: int, max_model_len: int) -> None:
    for operations in schema["paths"].values():
        for operation in operations.values():
            operation["responses"].pop("422", None)
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                if not status.startswith("2") and "text/event-stream" in content:  # errors are JSON
                    response["content"] = {"application/json": content.pop("text/event-stream")}
    components = schema["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    _bound_token_ids(components["CompletionRequest"]["properties"]["prompt"], vocab_size)
    for name in ("CompletionRequest", "ChatCompletionRequest"):
        fields = components[name]["properties"]
        _bound_token_ids(fields["stop_token_ids"], vocab_size)
        for field in ("max_tokens", "max_completion_tokens"):
            for branch in fields.get(field, {}).get("anyOf", []):
                if branch.get("type") == "integer":
                    branch["maximum"] = max_model_len - 1  # at least one prompt token
        stop = {"minLength": 1, "maxLength": limits.max_stop_length}
        for branch in fields["stop"]["anyOf"]:
            if branch.get("type") == "string":
                branch.update(stop)
            elif branch.get("type") == "array":
                branch["items"].update(stop)
                branch["maxItems"] = limits.max_stop_strings
        # stream_options only with "stream": true (``SamplingFields.check_supported``)
        components[name]["if"] = {"required": ["stream_options"],
                                  "properties": {"stream_options": {"not": {"type": "null"}}}}
        components[name]["then"] = {"required": ["stream"], "properties": {"stream": {"const": True}}}
        for field, accepted in UNSUPPORTED.items():
            fields[field] = {"enum": list(accepted), "title": fields[field].get("title", field),
                             "description": "not implemented: only these values (meaning 'not used') are accepted"}


def _bound_token_ids(node, vocab_size: int) -> None:
    """Every token id's schema (an integer with minimum 0) gets ``maximum: vocab_size - 1``."""
    if isinstance(node, dict):
        if node.get("type") == "integer" and node.get("minimum") == 0 and "maximum" not in node:
            node["maximum"] = vocab_size - 1
        for value in node.values():
            _bound_token_ids(value, vocab_size)
    elif isinstance(node, list):
        for value in node:
            _bound_token_ids(value, vocab_size)
