"""Serving: the engine behind an OpenAI-compatible HTTP API (chapter 9).

``AsyncEngine`` runs the engine loop in a thread and streams each request's outputs
to asyncio; ``build_app`` is the FastAPI app; ``ServerThread`` runs it on loopback.
``python -m tutorial_engine serve --model PATH`` is the command line.
"""

from .async_engine import AsyncEngine, EngineStats, QueueFullError, RequestStream
from .api import build_app
from .server import ServerThread

__all__ = ["AsyncEngine", "EngineStats", "QueueFullError", "RequestStream", "ServerThread", "build_app"]
