"""The API server's side of the process split (vLLM V1's ``AsyncLLM``): requests go to
an engine core process (``engine_core.py``), and its per-step token ids come back to be
turned into text here, on the server's event loop.

    event loop (FastAPI handlers)                     engine core process
    add_request: tokenize, check, send ------ PUSH ---> EngineCore.run
    _output_loop: recv, detokenize, stop  <-- PULL ---- one EngineCoreOutputs per step
      strings, put pieces on request queues
    loop.add_reader(core's sentinel) --> the core died: fail every stream, /health 503

The output loop takes *every* message waiting before it detokenizes, so a server that
falls behind the core pays for one batch of text per request, not one per step: its
streams get fewer, longer chunks, and the core never waits for it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import shutil
import tempfile
import time
import weakref

import zmq
import zmq.asyncio
from msgspec import msgpack

from ..config import EngineConfig
from ..inputs import Prompt, check_request, prompt_token_ids
from ..loader import load_tokenizer
from ..output_processor import OutputProcessor, RequestOutput
from ..sampling_params import SamplingParams
from ..sequence import Sequence, SequenceStatus
from .async_engine import EngineDeadError, QueueFullError, RequestStream
from .engine_core import run_engine_core
from .messages import (AbortRequests, CoreFailed, CoreOutput, CoreReady, EngineCoreOutput, EngineCoreOutputs,
                       EngineCoreRequest, EngineStats, Shutdown)

logger = logging.getLogger(__name__)

STARTUP_ERRORS = {"ValueError": ValueError, "TypeError": TypeError, "FileNotFoundError": FileNotFoundError}


class EngineCoreProcess:
    """The core process and the two sockets to it; :meth:`shutdown` leaves nothing behind
    (no process, no socket, no ``ipc://`` file), and runs at interpreter exit if nobody
    called it.

    Raises:
        ValueError, TypeError, FileNotFoundError: the engine's own error at start-up
            (bad options, no checkpoint), raised again here.
        RuntimeError: the core died or did not say ready within ``startup_timeout`` s.
    """

    def __init__(self, config: EngineConfig, startup_timeout: float = 900.0) -> None:
        self.folder = tempfile.mkdtemp(prefix="tutorial-engine-")  # private (mode 0700): only we can connect
        self._context = zmq.Context()
        self.input = self._context.socket(zmq.PUSH)
        self.input.setsockopt(zmq.SNDHWM, 0)  # queue requests rather than drop or block while the core is busy
        self.input.bind(f"ipc://{self.folder}/input")
        self.output = self._context.socket(zmq.PULL)
        self.output.setsockopt(zmq.RCVHWM, 0)
        self.output.bind(f"ipc://{self.folder}/output")
        self.process = multiprocessing.get_context("spawn").Process(
            target=run_engine_core, name="EngineCore",
            args=(config, f"ipc://{self.folder}/input", f"ipc://{self.folder}/output",
                  logging.getLogger().getEffectiveLevel()))
        self.process.start()
        self._finalizer = weakref.finalize(self, _stop_core, self.process, self.input, self.output, self._context,
                                           self.folder)
        try:
            self.ready = self._wait_ready(startup_timeout)
        except BaseException:
            self.shutdown()
            raise

    def _wait_ready(self, timeout: float) -> CoreReady:
        deadline = time.monotonic() + timeout
        while not self.output.poll(100):
            if not self.process.is_alive():
                raise RuntimeError(f"the engine core process exited with code {self.process.exitcode} while "
                                   "starting; its log is above.")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the engine core did not start within {timeout:.0f} s.")
        message = msgpack.decode(self.output.recv(), type=CoreOutput)
        if isinstance(message, CoreFailed):
            raise STARTUP_ERRORS.get(message.error_type, RuntimeError)(message.message)
        if not isinstance(message, CoreReady):
            raise RuntimeError(f"the engine core sent {type(message).__name__} before it was ready.")
        return message

    def send(self, message: EngineCoreRequest | AbortRequests | Shutdown) -> None:
        self.input.send(msgpack.encode(message), copy=False)

    def shutdown(self) -> None:
        self._finalizer()


def _stop_core(process: multiprocessing.Process, input_socket: zmq.Socket, output_socket: zmq.Socket,
               context: zmq.Context, folder: str) -> None:
    """Ask the core to stop, then terminate, then kill it; close and remove the sockets."""
    if process.is_alive():
        try:
            input_socket.send(msgpack.encode(Shutdown()), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        process.join(10)
    if process.is_alive():
        process.terminate()  # SIGTERM: the core shuts its engine down and exits
        process.join(10)
    if process.is_alive():
        process.kill()
        process.join()
    input_socket.close(linger=0)
    output_socket.close(linger=0)
    context.term()
    shutil.rmtree(folder, ignore_errors=True)


class EngineCoreClient:
    """What the :class:`OutputProcessor` drives, in place of an in-process engine: adds
    and aborts become messages, and each request's :class:`Sequence` here (a mirror of
    the core's) gains the tokens the core sends (stamped with their arrival time here)."""

    def __init__(self, core: EngineCoreProcess, tokenizer) -> None:
        self.core = core
        self.tokenizer = tokenizer
        self.requests: dict[int, Sequence] = {}  # unfinished requests by id, as LLMEngine.requests

    def add_sequence(self, seq: Sequence) -> None:
        self.requests[seq.seq_id] = seq
        self.core.send(EngineCoreRequest(seq.seq_id, seq.prompt_token_ids, seq.sampling_params))

    def abort(self, seq_id: int, reason: str = "abort") -> None:
        seq = self.requests.pop(seq_id, None)
        if seq is not None:
            seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason
            self.core.send(AbortRequests([seq_id]))

    def apply(self, outputs: list[EngineCoreOutput]) -> list[EngineCoreOutput]:
        """Add a step's tokens to the mirrors; returns the outputs that carry an error."""
        now = time.perf_counter()
        failed = []
        for out in outputs:
            seq = self.requests.get(out.request_id)
            if seq is None:  # aborted here while the step ran
                continue
            if out.error is not None:
                failed.append(out)
                continue
            if out.new_token_ids:
                seq.token_ids.extend(out.new_token_ids)
                seq.token_times.extend([now] * len(out.new_token_ids))
                if seq.first_token_time is None:
                    seq.first_token_time = now
            seq.num_cached_tokens = out.num_cached_tokens
            if out.finish_reason is not None:
                seq.status, seq.finish_reason = SequenceStatus.FINISHED, out.finish_reason
                del self.requests[out.request_id]
        return failed


class AsyncLLM:
    """The engine core in its own process, serving many asyncio clients; the same
    interface as :class:`~tutorial_engine.serving.async_engine.AsyncEngine` (the engine
    loop in a thread of this process).

    The core starts here (the model loads in it); :meth:`start` must then be called on
    the event loop that will add requests (the app's lifespan does it).

    Args:
        config: the engine's options.
        max_queued_requests: refuse new requests (:class:`QueueFullError`) while this
            many wait for admission; None: no limit.
        startup_timeout: seconds to wait for the core to load the model.
    """

    def __init__(self, config: EngineConfig, max_queued_requests: int | None = None,
                 startup_timeout: float = 900.0) -> None:
        self.max_queued_requests = max_queued_requests
        self.stats = EngineStats()
        self.tokenizer = load_tokenizer(config.model)
        self.core = EngineCoreProcess(config, startup_timeout)
        self.max_model_len = self.core.ready.max_model_len
        self.vocab_size = self.core.ready.vocab_size
        self._client = EngineCoreClient(self.core, self.tokenizer)
        self._processor = OutputProcessor(self._client)
        self._streams: dict[int, RequestStream] = {}
        self._request_ids = itertools.count()
        self._num_sent_since_stats = 0  # requests the last stats may not count yet
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._dead: str | None = None  # why the core is gone

    @property
    def requests(self) -> dict[int, Sequence]:
        """Unfinished requests by id (the mirrors of the core's)."""
        return self._client.requests

    # -- the event loop's side ----------------------------------------------------------

    def start(self) -> None:
        """Start reading the core's outputs on the running event loop."""
        self._loop = asyncio.get_running_loop()
        self._output = zmq.asyncio.Socket.from_socket(self.core.output)
        self._task = self._loop.create_task(self._output_loop())
        self._loop.add_reader(self.core.process.sentinel, self._core_exited)

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done() and self._dead is None

    def add_request(self, prompt: Prompt, params: SamplingParams) -> RequestStream:
        """Check a request, send it to the core and return its stream (call from a
        coroutine on the loop :meth:`start` ran on).

        Raises:
            TypeError, ValueError: the engine's checks (``inputs.py``), made here.
            QueueFullError: ``max_queued_requests`` are already waiting.
            EngineDeadError: the core process is gone.
        """
        if not self.is_running:
            raise EngineDeadError(self._dead or "the engine core is not running; restart the server.")
        token_ids = prompt_token_ids(prompt, self.tokenizer, self.vocab_size)
        ready = self.core.ready
        check_request(token_ids, params, self.max_model_len, ready.num_kvcache_blocks, ready.kvcache_block_size)
        outside = [t for t in params.stop_token_ids if t >= self.vocab_size]
        if outside:  # never sampled; and MessagePack holds no int above 2**64 - 1
            raise ValueError(f"stop_token_ids={list(params.stop_token_ids)} holds {outside[0]}, outside the "
                             f"vocabulary [0, {self.vocab_size}).")
        limit = self.max_queued_requests
        if limit is not None and self._num_sent_since_stats + self.stats.num_waiting >= limit:
            raise QueueFullError(f"{limit} requests are already waiting (--max-queued-requests); retry later.")
        seq = Sequence(next(self._request_ids), token_ids, params)
        stream = RequestStream(self, seq.seq_id, seq.num_prompt_tokens)
        self._streams[seq.seq_id] = stream
        self._processor.add(seq, stream=True)
        self._num_sent_since_stats += 1
        return stream

    def abort(self, request_id: int) -> None:
        """End a request now; the core frees its pages (call on the event loop)."""
        if self._streams.pop(request_id, None) is not None and self._dead is None:
            self._processor.abort(request_id)

    def shutdown(self) -> None:
        """Stop the core (it aborts what runs) and end every open stream."""
        if self._loop is not None:
            self._loop.remove_reader(self.core.process.sentinel)
        if self._task is not None:
            self._task.cancel()
        self._dead = self._dead or "the server is shutting down"
        self._fail_all(EngineDeadError(self._dead))
        self.core.shutdown()

    # -- outputs ----------------------------------------------------------------------------

    async def _output_loop(self) -> None:
        decoder = msgpack.Decoder(CoreOutput)
        try:
            while True:
                frames = [await self._output.recv(copy=False)]
                while self.core.output.poll(0):  # every message waiting, detokenized as one batch
                    frames.append(self.core.output.recv(copy=False))
                for frame in frames:
                    message = decoder.decode(frame.buffer)
                    if not isinstance(message, EngineCoreOutputs):
                        raise RuntimeError(f"the engine core sent {type(message).__name__} while serving")
                    self._fail_requests(self._client.apply(message.outputs))
                    self.stats = message.stats
                self._num_sent_since_stats = 0
                self._deliver(self._processor.process())
        except asyncio.CancelledError:
            raise
        except Exception as err:
            logger.exception("the engine core's outputs could not be read")
            self._dead = f"the engine core's outputs could not be read: {err}"
            self._fail_all(EngineDeadError(self._dead))

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is None:
                continue
            if out.error is not None or out.finished:
                del self._streams[out.request_id]
            stream.queue.put_nowait(out if out.error is None else out.error)

    def _fail_requests(self, failed: list[EngineCoreOutput]) -> None:
        for out in failed:
            self._processor.abort(out.request_id)
            stream = self._streams.pop(out.request_id, None)
            if stream is not None:
                stream.queue.put_nowait(RuntimeError(out.error))

    def _fail_all(self, err: BaseException) -> None:
        for stream in self._streams.values():
            stream.queue.put_nowait(err)
        self._streams.clear()

    def _core_exited(self) -> None:
        """The core's process sentinel became readable: it has exited."""
        self._loop.remove_reader(self.core.process.sentinel)
        self.core.process.join(1)
        self._dead = f"the engine core process exited (exit code {self.core.process.exitcode}); restart the server."
        logger.error(self._dead)
        self._task.cancel()
        self._fail_all(EngineDeadError(self._dead))
        self.stats = EngineStats()
