"""The API key, as a FastAPI dependency of each route that needs it.

A dependency belongs to a route, not to a path prefix, so a route is keyed wherever it
is mounted, and the OpenAPI document says which routes take the key (a Bearer
``securityScheme``). ``/health`` and ``/metrics`` stay open for probes and scrapers, as
in vLLM's ``--api-key``.
"""

from __future__ import annotations

import secrets

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import APIError


def require_api_key(api_key: str):
    """A dependency refusing requests without ``Authorization: Bearer <api_key>``
    (401 in OpenAI's error format, with ``WWW-Authenticate: Bearer``)."""
    bearer = HTTPBearer(auto_error=False, description="the server's --api-key")
    expected = api_key.encode()

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not secrets.compare_digest(given, expected):  # constant time: no timing hints
            raise APIError(401, "invalid or missing API key; send 'Authorization: Bearer KEY'.",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    return Depends(check)
