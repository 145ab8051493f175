"""One engine loop in a background thread, serving many asyncio clients.

``LLM.generate`` runs the loop in the caller's thread until *its* requests finish. A
server cannot: requests arrive at any time, from many connections, while others are
mid-generation. So the loop gets a thread of its own, and two kinds of queue connect
it to the web server's event loop:

    event loop (FastAPI handlers)              engine thread
    add_request(...) ---- inbox (queue.Queue) ---> engine.add_sequence, step, ...
    async for out in stream <- asyncio.Queue <---- loop.call_soon_threadsafe(...)

The engine itself is touched only by its thread (it is not thread-safe), and an
asyncio queue only by its event loop (neither is it): the engine thread hands each
step's outputs over with ``loop.call_soon_threadsafe``, which runs a callback on the
event loop's own thread. SGLang and mini-SGLang split the same way (their scheduler
runs in another process, talking over ZeroMQ); vLLM's ``AsyncLLM`` too, and so does
this package's server by default (``async_llm.py``): this class is the single-process
server of ``serve --engine-core inproc``, kept to measure what the split buys.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator
from typing import Protocol

from ..engine import LLMEngine
from ..inputs import Prompt
from ..output_processor import OutputProcessor, RequestOutput
from ..sampling_params import SamplingParams
from ..sequence import Sequence
from .engine_core import engine_stats
from .messages import EngineStats

logger = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """More requests are waiting than ``max_queued_requests`` allows (HTTP 503)."""


class EngineDeadError(RuntimeError):
    """The engine loop (thread or core process) has stopped, so no request can be served (HTTP 503)."""


class Aborter(Protocol):
    """What a stream's request runs on: this module's :class:`AsyncEngine`, or
    ``async_llm.AsyncLLM``."""

    def abort(self, request_id: int) -> None: ...


class RequestStream:
    """The outputs of one request, as an async iterator of :class:`RequestOutput`
    deltas, ending after the output whose ``finish_reason`` is set.

    Leaving the iteration early (a ``break``, or the task being cancelled because the
    client went away) aborts the request, which frees its KV-cache pages; so does
    :meth:`close`, which does not depend on the iteration being finalized.
    """

    def __init__(self, engine: Aborter, request_id: int, num_prompt_tokens: int) -> None:
        self.request_id = request_id
        self.num_prompt_tokens = num_prompt_tokens
        self.queue: asyncio.Queue[RequestOutput | BaseException] = asyncio.Queue()
        self._engine = engine
        self._finished = False

    async def __aiter__(self) -> AsyncIterator[RequestOutput]:
        try:
            while not self._finished:
                item = await self.queue.get()
                if isinstance(item, BaseException):
                    raise item
                self._finished = item.finished
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Abort the request now unless it has finished (its pages are freed at once)."""
        if not self._finished:
            self._finished = True
            self._engine.abort(self.request_id)


class AsyncEngine:
    """Runs ``engine``'s loop in a daemon thread; coroutines add requests and read
    their outputs.

    Args:
        engine: the engine; from :meth:`start` on, only the loop thread touches it.
        max_queued_requests: refuse new requests (:class:`QueueFullError`) while this
            many are waiting for admission; None: no limit.

    ``stats`` is the :class:`EngineStats` the engine thread publishes after each step
    (a new object each time, so a reader never sees half an update).
    """

    def __init__(self, engine: LLMEngine, max_queued_requests: int | None = None) -> None:
        self.engine = engine
        self.max_queued_requests = max_queued_requests
        self.stats = EngineStats()
        self._processor = OutputProcessor(engine)
        self._inbox: queue.Queue[tuple] = queue.Queue()
        self._streams: dict[int, tuple[asyncio.AbstractEventLoop, RequestStream]] = {}  # engine thread only
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._stopping = False

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.engine.spec.vocab_size

    @property
    def requests(self) -> dict[int, Sequence]:
        return self.engine.requests

    # -- the event loop's side ----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def add_request(self, prompt: Prompt, params: SamplingParams) -> RequestStream:
        """Validate and tokenize a request, queue it, and return its stream. Call from
        a coroutine (the stream belongs to the running event loop).

        Raises:
            TypeError, ValueError: the engine's own checks (``LLMEngine.make_sequence``).
            QueueFullError: ``max_queued_requests`` are already waiting.
            EngineDeadError: the engine thread has stopped.
        """
        if not self.is_running:
            raise EngineDeadError("the engine loop is not running; restart the server.")
        seq = self.engine.make_sequence(prompt, params)
        limit = self.max_queued_requests
        if limit is not None and self._inbox.qsize() + self.stats.num_waiting >= limit:
            raise QueueFullError(f"{limit} requests are already waiting (--max-queued-requests); retry later.")
        stream = RequestStream(self, seq.seq_id, seq.num_prompt_tokens)
        self._inbox.put(("add", seq, asyncio.get_running_loop(), stream))
        return stream

    def abort(self, request_id: int) -> None:
        """End a request now and free its pages (from any thread)."""
        self._inbox.put(("abort", request_id))

    def shutdown(self) -> None:
        """Stop the loop thread (aborting what runs) and release the engine."""
        self._inbox.put(("stop",))
        self._thread.join(timeout=30)

    # -- the engine thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                self._take_inbox(block=not self.engine.has_unfinished())
                if self.engine.has_unfinished():
                    self._step()
        finally:
            self._stopping = True  # add_request refuses from here on
            dead = EngineDeadError("the engine loop stopped")
            self._fail_all(dead)
            self.engine.shutdown()
            self._fail_inbox(dead)  # requests added while the loop was stopping

    def _fail_inbox(self, err: BaseException) -> None:
        """Answer every request still in the inbox with ``err``."""
        items = []
        while True:
            try:
                command = self._inbox.get_nowait()
            except queue.Empty:
                break
            if command[0] == "add":
                _, seq, loop, stream = command
                self._streams[seq.seq_id] = (loop, stream)
                items.append((seq.seq_id, err))
        self._deliver(items)

    def _take_inbox(self, block: bool) -> None:
        """Apply queued commands: all that wait, after the first when ``block``."""
        try:
            command = self._inbox.get(block=block)
            while True:
                self._apply(command)
                command = self._inbox.get_nowait()
        except queue.Empty:
            pass
        self._publish_stats()

    def _apply(self, command: tuple) -> None:
        kind = command[0]
        if kind == "add":
            _, seq, loop, stream = command
            self._streams[seq.seq_id] = (loop, stream)
            self._processor.add(seq, stream=True)
        elif kind == "abort":
            self._processor.abort(command[1])
            self._streams.pop(command[1], None)
        else:
            self._stopping = True

    def _step(self) -> None:
        """One engine step; deliver its outputs. A failing step aborts its own requests
        (the engine does that) and fails their streams; the loop goes on for the rest. A
        request whose output fails (``RequestOutput.error``) fails its stream alone."""
        try:
            outputs = self._processor.step()
        except Exception as err:
            logger.exception("engine step failed")
            self._deliver([(request_id, err) for request_id in self._processor.drop_finished()])
            return
        self._deliver([(out.request_id, out if out.error is None else out.error) for out in outputs])
        self._publish_stats()

    def _deliver(self, items: list[tuple[int, RequestOutput | BaseException]]) -> None:
        """Hand a step's outputs to their event loops: one thread-safe call per loop
        per step, rather than one per output (each call wakes the loop)."""
        batches: dict[asyncio.AbstractEventLoop, list] = {}
        for request_id, item in items:
            entry = self._streams.get(request_id)
            if entry is None:
                continue
            loop, stream = entry
            if isinstance(item, BaseException) or item.finished:
                del self._streams[request_id]
            batches.setdefault(loop, []).append((stream, item))
        for loop, batch in batches.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:  # that event loop has closed: nobody is listening
                pass

    def _publish_stats(self) -> None:
        self.stats = engine_stats(self.engine)

    def _fail_all(self, err: BaseException) -> None:
        self._deliver([(request_id, err) for request_id in list(self._streams)])


def _put_all(batch: list[tuple[RequestStream, RequestOutput | BaseException]]) -> None:
    for stream, item in batch:
        stream.queue.put_nowait(item)
