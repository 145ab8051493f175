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
from starlette.exceptions import HTTPException

from .async_engine import EngineDeadError, QueueFullError


class APIError(Exception):
    """An error response: ``status`` (4xx/5xx) and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, type: str = "invalid_request_error",
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.type, self.code = status, message, param, type, code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.type, self.code)


def error_response(status: int, message: str, param: str | None = None, type: str = "invalid_request_error",
                   code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def from_validation(err: TypeError | ValueError, fields: tuple[str, ...], default_param: str | None) -> APIError:
    """A 400 for an engine check that failed: ``param`` is the field among ``fields``
    the message starts with (``"top_p=..."``, ``"stop[0]..."``), else ``default_param``."""
    match = re.match(r"(\w+)", str(err))
    param = match.group(1) if match and match.group(1) in fields else default_param
    return APIError(400, str(err), param)


def _field_path(loc: tuple) -> str | None:
    """pydantic's error location as a field path: ("body", "messages", 0, "content")
    -> "messages[0].content"."""
    path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """pydantic's refusals of a request body: malformed JSON, a missing field, a wrong
    type, an unknown field. Reported one at a time, the first, like OpenAI."""
    error = exc.errors()[0]
    param = _field_path(tuple(error.get("loc", ())))
    kind = error.get("type")
    if kind == "json_invalid":
        message = f"the request body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
        param = None
    elif kind == "extra_forbidden":
        message = f"unrecognized request argument supplied: {param}"
    elif kind == "missing":
        message = f"missing required field: {param}"
    else:
        message = f"{param}: {error.get('msg')} (got {str(error.get('input'))[:60]!r})"
    return error_response(400, message, param)


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app raises leaves as an OpenAI-style body."""

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
        return error_response(exc.status_code, str(exc.detail), code=str(exc.status_code))

    app.add_exception_handler(RequestValidationError, _validation_error)
