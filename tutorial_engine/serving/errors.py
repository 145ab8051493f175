"""Errors in OpenAI's format, so any OpenAI client shows them properly.

Every failure the server reports is an HTTP status and a body

    {"error": {"message": "...", "type": "invalid_request_error", "param": "top_p", "code": null}}

(the shape of the OpenAI API's errors: https://platform.openai.com/docs/guides/error-codes).
The engine's own checks raise TypeError / ValueError with a message that starts with
the field's name (``top_p=1.5 is outside (0, 1]...``); :func:`from_validation` turns
them into a 400 naming that field, so the rules live in one place, the engine.
"""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from .async_engine import EngineDeadError, QueueFullError


class APIError(HTTPException):
    """An error response: ``status`` (4xx/5xx) and OpenAI's error fields. An
    HTTPException, so FastAPI passes it on unchanged also from inside its body parsing."""

    def __init__(self, status: int, message: str, param: str | None = None, type: str = "invalid_request_error",
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.type, self.code, self.headers)


def error_response(status: int, message: str, param: str | None = None, type: str = "invalid_request_error",
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """The body of every error the server sends (OpenAI's format)."""

    error: ErrorDetail


def documented(*statuses: int) -> dict:
    """OpenAPI ``responses`` entries for these error statuses, in OpenAI's format."""
    return {status: {"model": ErrorResponse, "description": ERROR_MEANINGS[status]} for status in statuses}


ERROR_MEANINGS = {
    400: "invalid request: a field's type or value, a prompt over the model's context (max_model_len), "
         "a stop list over the server's limits",
    401: "missing or wrong API key (send 'Authorization: Bearer KEY')",
    404: "a model this server does not serve",
    413: "a request body over --max-body-bytes",
    503: "the queue is full (--max-queued-requests) or the engine has stopped",
}


def from_validation(err: TypeError | ValueError, fields: tuple[str, ...], default_param: str | None) -> APIError:
    """A 400 for an engine check that failed: ``param`` is the field among ``fields``
    the message starts with (``"top_p=..."``, ``"stop[0]..."``), else ``default_param``."""
    match = re.match(r"(\w+)", str(err))
    param = match.group(1) if match and match.group(1) in fields else default_param
    return APIError(400, str(err), param)


def _field_path(loc: tuple, fields: frozenset[str], keep_last: bool) -> str | None:
    """pydantic's error location as a field path: ("body", "messages", 0, "content")
    -> "messages[0].content". Parts that are not field names (pydantic names the
    member of a union it tried, e.g. "list[int]") are dropped, except the last one
    when ``keep_last`` (an unknown field's name)."""
    parts = loc[1:] if loc and loc[0] == "body" else loc
    path = ""
    for i, part in enumerate(parts):
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in fields or (keep_last and i == len(parts) - 1):
            path += f".{part}" if path else str(part)
    return path or None


def _validation_handler(fields: frozenset[str]):
    """pydantic's refusals of a request body: malformed JSON, a missing field, a wrong
    type, an unknown field. The first is reported, as OpenAI reports one at a time."""

    async def handler(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = exc.errors()[0]
        kind = error.get("type")
        param = _field_path(tuple(error.get("loc", ())), fields, keep_last=kind == "extra_forbidden")
        if kind == "json_invalid":
            message = f"the request body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
            param = None
        elif kind == "extra_forbidden":
            message = f"unrecognized request argument supplied: {param}"
        elif kind == "string_unicode":  # JSON can carry lone surrogates ("\ud800"), which are not text
            message = f"{param} is not valid Unicode (it holds a lone surrogate); send valid UTF-8 text."
        elif kind == "missing" and param is None:  # the body itself
            message = "the request has no body; send a JSON object (Content-Type: application/json)."
        elif kind == "missing":
            message = f"missing required field: {param}"
        else:
            message = f"{param or 'body'}: {error.get('msg')} (got {str(error.get('input'))[:60]!r})"
        return error_response(400, message, param)

    return handler


def install_error_handlers(app: FastAPI, fields: frozenset[str]) -> None:
    """Every error the app raises leaves as an OpenAI-style body; ``fields``: the
    request bodies' field names, to name the one a validation error is about."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(QueueFullError)
    async def queue_full(request: Request, exc: QueueFullError) -> JSONResponse:
        return error_response(503, str(exc), type="server_overloaded", code="queue_full")

    @app.exception_handler(EngineDeadError)
    async def engine_dead(request: Request, exc: EngineDeadError) -> JSONResponse:
        return error_response(503, str(exc), type="server_error", code="engine_dead")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:  # 404, 405, ...
        # ``headers`` keeps e.g. a 405's ``Allow``.
        return error_response(exc.status_code, str(exc.detail), code=str(exc.status_code), headers=exc.headers)

    app.add_exception_handler(RequestValidationError, _validation_handler(fields))
