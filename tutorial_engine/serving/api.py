"""The HTTP server: OpenAI's completions and chat completions APIs over one engine.

Routes (the API reference: https://platform.openai.com/docs/api-reference):

- ``POST /v1/completions``, ``POST /v1/chat/completions``: with ``"stream": true`` the
  answer comes as server-sent events, one ``data: {chunk}`` line per piece of text
  and a last ``data: [DONE]``; otherwise one JSON body. Both report ``usage``.
- ``GET /v1/models``: the one model served. ``GET /health``: 200 ``{"status": "ok"}``
  while the engine loop runs, else 503. ``GET /metrics``: Prometheus text.
- ``POST /generate`` and ``POST /generate_stream``: the same as ``/v1/completions``
  with ``stream`` false and true, for clients of the tutorial's simpler API.

- ``GET /docs``, ``/redoc``, ``/openapi.json``: the API's OpenAPI document.

With an API key every route but ``/health`` and ``/metrics`` needs it. A handler
validates its request, tokenizes it off the event loop (``tokenize.py``) and queues it
(:meth:`AsyncEngine.add_request`), then
reads the request's outputs from its asyncio queue while the engine core runs the
batch. A client that goes away mid-answer has its request aborted at once.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from ..output_processor import RequestOutput
from .async_engine import AsyncEngine, RequestStream
from .async_llm import AsyncLLM
from .auth import require_api_key
from .errors import APIError, documented, error_response, from_validation, install_error_handlers
from .limits import ServerLimits
from .metrics import ServerMetrics
from .middleware import BodySizeLimitMiddleware
from .openapi import install_openapi
from .protocol import FIELD_NAMES, ChatCompletionRequest, CompletionRequest, SamplingFields
from .tokenize import encode_chat, encode_prompt, max_chars_per_token


class Health(BaseModel):
    status: Literal["ok", "unavailable"]


# One server-sent event (OpenAPI 3.1: the schema of a text/event-stream describes each
# event): its data is a JSON chunk, or [DONE] at the end.
EVENT = {"type": "object", "required": ["data"],
         "properties": {"data": {"type": "string", "description": "a JSON chunk, or [DONE] (the last event)"}}}
EVENTS = {200: {"content": {"text/event-stream": {"schema": EVENT}}, "description": "server-sent events"}}
# The 200 of a route that answers with JSON, or with server-sent events when "stream" is true.
JSON_OR_EVENTS = {200: {"content": {"text/event-stream": {"schema": EVENT}},
                        "description": "JSON, or with \"stream\": true server-sent events ending in data: [DONE]"}}
ERRORS = documented(400, 404, 413, 503)


def build_app(engine: AsyncLLM | AsyncEngine, model_name: str, api_key: str | None = None,
              max_body_bytes: int | None = None, limits: ServerLimits | None = None) -> FastAPI:
    """The FastAPI app serving ``engine`` (the engine core in its own process, or the
    loop in a thread) as model ``model_name``. The app's lifespan starts the engine's
    loop and shuts it down. With ``api_key``, every route but
    ``/health`` and ``/metrics`` (the API, the generation routes, ``/docs``, ``/redoc``
    and ``/openapi.json``) needs it as a Bearer token (401 otherwise). ``limits``: the
    request bounds (bodies over ``max_body_bytes``, which overrides its field, get 413)."""
    limits = limits or ServerLimits()
    if max_body_bytes is not None:
        limits = replace(limits, max_body_bytes=max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.shutdown()

    # FastAPI's own docs routes are replaced by keyed ones below.
    app = FastAPI(title="tutorial_engine", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app, FIELD_NAMES)
    install_openapi(app, limits, engine.vocab_size, engine.max_model_len)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=limits.max_body_bytes)
    server = OpenAIServer(engine, model_name, ServerMetrics(engine), limits)
    keyed = APIRouter(dependencies=[require_api_key(api_key)] if api_key else [],
                      responses=documented(401) if api_key else {})

    @app.get("/health", responses={200: {"model": Health, "description": "the engine loop runs"},
                                   503: {"model": Health, "description": "the engine loop has stopped"}})
    async def health() -> JSONResponse:
        """200 {"status": "ok"} while the engine loop runs, else 503 {"status": "unavailable"}; no key needed."""
        running = engine.is_running
        return JSONResponse({"status": "ok" if running else "unavailable"}, status_code=200 if running else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text; no key needed."""
        return Response(server.metrics.render(), media_type=server.metrics.content_type)

    @keyed.get("/v1/models")
    async def models() -> dict:
        card = {"id": model_name, "object": "model", "created": server.created, "owned_by": "tutorial_engine",
                "max_model_len": engine.max_model_len}
        return {"object": "list", "data": [card]}

    @keyed.post("/v1/completions", responses={**ERRORS, **JSON_OR_EVENTS})
    async def completions(body: CompletionRequest, request: Request) -> Response:
        return await server.complete(body, request)

    @keyed.post("/v1/chat/completions", responses={**ERRORS, **JSON_OR_EVENTS})
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        return await server.chat(body, request)

    @keyed.post("/generate", responses=ERRORS)
    async def generate(body: CompletionRequest, request: Request) -> Response:
        """``/v1/completions`` with ``stream`` false (``stream_options`` has nothing to act on:
        the JSON answer always holds the usage)."""
        return await server.complete(body.model_copy(update={"stream": False, "stream_options": None}), request)

    @keyed.post("/generate_stream", responses={**ERRORS, **EVENTS}, response_class=EventStreamResponse)
    async def generate_stream(body: CompletionRequest, request: Request) -> Response:
        """``/v1/completions`` with ``stream`` true: server-sent events ending in ``data: [DONE]``."""
        return await server.complete(body.model_copy(update={"stream": True}), request)

    @keyed.get("/openapi.json", include_in_schema=False)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @keyed.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} API")

    @keyed.get("/redoc", include_in_schema=False)
    async def redoc() -> Response:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} API")

    app.include_router(keyed)
    return app


class OpenAIServer:
    """Turns API requests into engine requests, and engine outputs into API responses."""

    def __init__(self, engine: AsyncLLM | AsyncEngine, model_name: str, metrics: ServerMetrics, limits: ServerLimits) -> None:
        self.engine = engine
        self.model_name = model_name
        self.metrics = metrics
        self.limits = limits
        self.created = int(time.time())
        self.chars_per_token = max_chars_per_token(engine.tokenizer)

    # -- requests -------------------------------------------------------------------------

    async def complete(self, body: CompletionRequest, request: Request) -> Response:
        self._check(body)
        engine = self.engine
        token_ids = await encode_prompt(body.single_prompt(), engine.tokenizer, engine.vocab_size,
                                        engine.max_model_len, self.chars_per_token)
        max_tokens = body.max_tokens if body.max_tokens is not None else 16
        return await self._serve(body, request, token_ids, (max_tokens, "max_tokens"), "prompt", chat=False)

    async def chat(self, body: ChatCompletionRequest, request: Request) -> Response:
        self._check(body)
        messages = [m.as_template_input() for m in body.messages]
        token_ids = await encode_chat(messages, self.engine.tokenizer, self.model_name)
        max_tokens, param = body.requested_max_tokens()
        if max_tokens is None:  # OpenAI: the reply may use the rest of the context
            max_tokens = max(1, self.engine.max_model_len - len(token_ids))
        return await self._serve(body, request, token_ids, (max_tokens, param), "messages", chat=True)

    def _check(self, body: SamplingFields) -> None:
        body.check_supported()
        try:
            self.limits.check_stop(body.stop_list())
        except ValueError as err:
            raise APIError(400, str(err), "stop") from err
        if body.model is not None and body.model != self.model_name:
            raise APIError(404, f"model {body.model!r} is not served here; this server serves {self.model_name!r}.",
                           "model", code="model_not_found")

    async def _serve(self, body: SamplingFields, request: Request, token_ids: list[int],
                     max_tokens: tuple[int, str], prompt_param: str, chat: bool) -> Response:
        """``max_tokens``: the reply's limit and the field that set it (named in errors)."""
        context = self.engine.max_model_len
        (max_tokens, tokens_param) = max_tokens
        if len(token_ids) + max_tokens > context:
            param = tokens_param if len(token_ids) < context else prompt_param
            raise APIError(400, f"this model's context is {context} tokens (max_model_len); the {prompt_param} has "
                           f"{len(token_ids)} tokens and {tokens_param}={max_tokens} would exceed it.", param,
                           code="context_length_exceeded")  # OpenAI's code for it
        params = body.sampling_params(max_tokens)
        try:
            stream = self.engine.add_request(token_ids, params)
        except (TypeError, ValueError) as err:  # e.g. longer than the whole KV cache
            raise from_validation(err, ("max_tokens", "stop_token_ids"), prompt_param) from err
        reply = Reply(self.model_name, chat, body.include_usage)
        if body.stream:
            return EventStreamResponse(self._events(stream, reply), media_type="text/event-stream")
        return await self._collect(stream, reply, request)

    # -- responses ------------------------------------------------------------------------

    async def _events(self, stream: RequestStream, reply: Reply) -> AsyncIterator[str]:
        """Server-sent events: a chunk per output, the usage if asked, then [DONE]. If
        the client disconnects, the response closes this generator (EventStreamResponse),
        and closing it aborts the request at once."""
        try:
            async for out in stream:
                yield sse(reply.chunk(out))
                if out.finished:
                    self.metrics.observe(out)
                    if reply.include_usage:
                        yield sse(reply.usage_chunk(out))
        except Exception as err:  # the engine failed this request's step
            yield sse({"error": {"message": str(err), "type": "server_error", "param": None, "code": None}})
        finally:  # the `async for` does not close the stream's own iterator: abort here
            stream.close()
        yield "data: [DONE]\n\n"

    async def _collect(self, stream: RequestStream, reply: Reply, request: Request) -> Response:
        """The whole answer as one response; abort if the client leaves before it."""

        async def gather() -> tuple[str, RequestOutput]:
            pieces, out = [], None
            async for out in stream:
                pieces.append(out.text)
            return "".join(pieces), out

        task = asyncio.ensure_future(gather())
        watcher = asyncio.ensure_future(_wait_for_disconnect(request))
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        watcher.cancel()
        if not task.done():
            task.cancel()  # the client left: leaving gather's loop aborts the request
            return Response(status_code=499)
        try:
            text, last = task.result()
        except Exception as err:
            return error_response(500, f"the engine failed this request: {err}", type="server_error")
        self.metrics.observe(last)
        return JSONResponse(reply.response(text, last))


class EventStreamResponse(StreamingResponse):
    """Server-sent events (``text/event-stream``), as a StreamingResponse that closes its generator however the response ends. On a
    disconnect Starlette stops iterating but leaves the generator suspended, to be
    finalized whenever the garbage collector gets to it; closing it is what aborts the
    request and frees its KV-cache pages."""

    media_type = "text/event-stream"
    body_iterator: AsyncGenerator[str, None]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


class Reply:
    """The OpenAI JSON of one request's answer: whole, or as stream chunks."""

    def __init__(self, model: str, chat: bool, include_usage: bool) -> None:
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.model = model
        self.chat = chat
        self.include_usage = include_usage
        self.created = int(time.time())
        self._sent_role = False

    def _envelope(self, obj: str, choices: list) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def response(self, text: str, last: RequestOutput) -> dict:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": 0, "text": text}
        choice.update(logprobs=None, finish_reason=last.finish_reason)
        body = self._envelope("chat.completion" if self.chat else "text_completion", [choice])
        body["usage"] = usage(last)
        return body

    def chunk(self, out: RequestOutput) -> dict:
        """One output as a stream chunk (the text may be "" while a multi-byte
        character is incomplete, or for a model without a tokenizer)."""
        if self.chat:
            delta = {"content": out.text}
            if not self._sent_role:
                delta = {"role": "assistant", **delta}
                self._sent_role = True
            choice = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": out.text}
        choice.update(logprobs=None, finish_reason=out.finish_reason)
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [choice])
        if self.include_usage:
            body["usage"] = None  # OpenAI: null on every chunk but the last
        return body

    def usage_chunk(self, last: RequestOutput) -> dict:
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [])
        body["usage"] = usage(last)
        return body


def usage(last: RequestOutput) -> dict:
    return {"prompt_tokens": last.num_prompt_tokens, "completion_tokens": last.num_output_tokens,
            "total_tokens": last.num_prompt_tokens + last.num_output_tokens,
            "prompt_tokens_details": {"cached_tokens": last.num_cached_tokens}}


def sse(data: dict) -> str:
    """One server-sent event (https://html.spec.whatwg.org/multipage/server-sent-events.html)."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _wait_for_disconnect(request: Request) -> None:
    """Return when the client closes the connection (the body was read already, so
    the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
