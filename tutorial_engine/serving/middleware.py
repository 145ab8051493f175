"""What every request passes before a handler sees it: a body-size cap.

ASGI middleware (a wrapper around the app with the same ``(scope, receive, send)``
signature), so it acts before FastAPI reads or parses the body. (The API key is a
dependency of each keyed route: ``auth.py``.)
"""

from __future__ import annotations

from .errors import APIError


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, so one client cannot make the
    server buffer unbounded memory: at once when ``Content-Length`` says so, else
    while the body streams in (chunked uploads), where :class:`APIError` reaches the
    app's error handler from FastAPI's body read."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> APIError:
        return APIError(413, f"the request body is larger than {self.max_bytes} bytes (--max-body-bytes).",
                        code="request_too_large")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._error().response()(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, counted_receive, send)
