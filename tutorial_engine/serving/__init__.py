"""Serving: the engine behind an OpenAI-compatible HTTP API (chapter 9).

``AsyncLLM`` runs the engine loop in an engine core process (``engine_core.py``) and
streams each request's outputs to asyncio; ``AsyncEngine`` runs it in a thread of the
server instead; ``build_app`` is the FastAPI app over either; ``ServerThread`` runs it
on loopback.
``python -m tutorial_engine serve --model PATH`` is the command line.
"""

from __future__ import annotations

import importlib

# name -> submodule. Loaded on first use (PEP 562), so that importing the command line
# (``serving.cli``) does not need FastAPI: ``generate`` and ``bench`` run without the
# ``serve`` extra.
_EXPORTS = {"AsyncEngine": "async_engine", "AsyncLLM": "async_llm", "EngineStats": "messages",
            "QueueFullError": "async_engine", "RequestStream": "async_engine", "build_app": "api",
            "ServerThread": "server"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
