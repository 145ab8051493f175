"""The engine core: the engine loop in a process of its own (vLLM V1's ``EngineCore``,
mini-SGLang's scheduler process).

One Python interpreter runs one thread at a time. When the HTTP server, the
detokenizer and the engine loop share one, every millisecond spent parsing JSON or
writing server-sent events is a millisecond the loop does not plan the next step, and
the GPU waits. So the server (``async_llm.py``) keeps HTTP, tokenization,
detokenization and stop strings, and this process keeps only the loop:

    API server process                            engine core process
    AsyncLLM --- EngineCoreRequest, AbortRequests ---> EngineCore.run: LLMEngine.step()
             <--------- EngineCoreOutputs (per step) ---

over two ZeroMQ PUSH/PULL sockets (``ipc://`` files in a private temporary folder),
with msgspec/MessagePack messages (``messages.py``). The core never outlives the
server: it polls, beside its input socket, the pipe that ``multiprocessing`` keeps
open to its parent, which becomes readable when the parent dies however it died.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time

import zmq
from msgspec import msgpack

from ..config import EngineConfig
from ..engine import LLMEngine
from ..sequence import Sequence
from ..sim.device import SimulatedDevice
from .messages import (AbortRequests, CoreFailed, CoreInput, CoreReady, EngineCoreOutput, EngineCoreOutputs,
                       EngineCoreRequest, EngineStats, Shutdown)

logger = logging.getLogger(__name__)


def engine_stats(engine: LLMEngine) -> EngineStats:
    """The engine's :class:`EngineStats` now (read by the thread that runs its loop)."""
    scheduler, kv = engine.scheduler, engine.kv_cache
    device = getattr(engine.executor, "device", None)
    busy = device.queued_busy_s if isinstance(device, SimulatedDevice) else None
    spec = scheduler.spec_decode_stats
    return EngineStats(len(scheduler.running), len(scheduler.waiting), 1.0 - kv.num_free_blocks / engine.num_kvcache_blocks,
                       engine.metrics.num_steps, time.process_time(), busy,
                       spec.num_drafts, spec.num_draft_tokens, spec.num_accepted_tokens)


class EngineCore:
    """An :class:`LLMEngine` driven by messages: requests and aborts in, each step's new
    tokens out. It tracks, per request, how many tokens it has sent."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.requests: dict[int, Sequence] = {}
        self._num_sent: dict[int, int] = {}

    def ready(self) -> CoreReady:
        engine = self.engine
        return CoreReady(engine.max_model_len, engine.spec.vocab_size, engine.num_kvcache_blocks,
                         engine.config.kvcache_block_size)

    def add(self, request: EngineCoreRequest) -> None:
        seq = Sequence(request.request_id, request.prompt_token_ids, request.sampling_params)
        self.engine.add_sequence(seq)
        self.requests[seq.seq_id] = seq
        self._num_sent[seq.seq_id] = 0

    def abort(self, request_ids: list[int]) -> None:
        for request_id in request_ids:
            self.engine.abort(request_id)
            self.requests.pop(request_id, None)
            self._num_sent.pop(request_id, None)

    def step(self) -> EngineCoreOutputs:
        """One engine step; the requests that advanced or ended in it. A failing step
        aborts its own requests (the engine does that); they end with the error."""
        error = None
        try:
            self.engine.step()
        except Exception as err:
            logger.exception("engine step failed")
            error = f"the engine step failed: {err}"
        outputs = []
        for request_id, seq in list(self.requests.items()):
            sent = self._num_sent[request_id]
            new = seq.token_ids[seq.num_prompt_tokens + sent:]
            if not new and not seq.is_finished:
                continue
            self._num_sent[request_id] = sent + len(new)
            if seq.is_finished:
                del self.requests[request_id], self._num_sent[request_id]
            failed = error if seq.is_finished and seq.finish_reason == "abort" else None
            outputs.append(EngineCoreOutput(request_id, new, seq.finish_reason, seq.num_cached_tokens, failed))
        return EngineCoreOutputs(outputs, engine_stats(self.engine))

    def run(self, inbox: zmq.Socket, outbox: zmq.Socket, parent_sentinel: int) -> bool:
        """The busy loop: take every waiting message, then step while there is work;
        block on the socket (and the parent pipe) only when idle. Returns False on
        :class:`Shutdown`, True when the parent process has died."""
        decoder = msgpack.Decoder(CoreInput)
        encoder = msgpack.Encoder()
        poller = zmq.Poller()
        poller.register(inbox, zmq.POLLIN)
        poller.register(parent_sentinel, zmq.POLLIN)
        while True:
            busy = self.engine.has_unfinished()
            events = dict(poller.poll(0 if busy else None))
            if parent_sentinel in events:
                logger.warning("the API server process is gone; the engine core exits")
                return True
            if inbox in events:
                while True:
                    try:
                        message = decoder.decode(inbox.recv(zmq.NOBLOCK, copy=False).buffer)
                    except zmq.Again:
                        break
                    if isinstance(message, EngineCoreRequest):
                        self.add(message)
                    elif isinstance(message, AbortRequests):
                        self.abort(message.request_ids)
                    else:
                        return False
            if self.engine.has_unfinished():
                outbox.send(encoder.encode(self.step()), copy=False)
            elif inbox in events:  # aborts while idle: the server's stats must still reach zero
                outbox.send(encoder.encode(EngineCoreOutputs([], engine_stats(self.engine))), copy=False)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds through ``run``'s finally: the engine shuts down


def run_engine_core(config: EngineConfig, input_address: str, output_address: str, log_level: int) -> None:
    """The core process's entry point (``multiprocessing`` spawn): connect, load the
    engine, say :class:`CoreReady` (or :class:`CoreFailed`), serve until told to stop."""
    logging.basicConfig(level=log_level, format="%(levelname)s %(name)s (engine core): %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the server stops us
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    context = zmq.Context()
    inbox = context.socket(zmq.PULL)
    inbox.connect(input_address)
    outbox = context.socket(zmq.PUSH)
    outbox.setsockopt(zmq.SNDHWM, 0)  # never drop or block on outputs: the server reads them all
    outbox.setsockopt(zmq.LINGER, 5000)  # deliver the last message (e.g. CoreFailed) before exiting
    outbox.connect(output_address)
    encoder = msgpack.Encoder()
    try:
        engine = LLMEngine(config)
    except Exception as err:
        outbox.send(encoder.encode(CoreFailed(type(err).__name__, str(err))))
        outbox.close()
        context.term()
        sys.exit(1)
    core = EngineCore(engine)
    try:
        outbox.send(encoder.encode(core.ready()))
        if core.run(inbox, outbox, multiprocessing.parent_process().sentinel):
            # the server died without cleaning up: remove its socket files' private folder
            shutil.rmtree(os.path.dirname(input_address.removeprefix("ipc://")), ignore_errors=True)
    finally:
        engine.shutdown()
        inbox.close(linger=0)
        outbox.close(linger=0)
        context.term()
