"""From engine steps to what a caller sees: text deltas, stop strings, finish reasons.

The engine works in token ids. After each :meth:`LLMEngine.step` the processor looks
at the requests it tracks and, for each that has new tokens, turns them into text
(:class:`IncrementalDetokenizer`), ends the request when its text contains one of its
stop strings (``SamplingParams.stop``, checked on text because a stop string may span
tokens or cut one in half), and reports a :class:`RequestOutput`. vLLM's v1 engine
splits its frontend the same way (an output processor beside the engine core).

A request that streams or has stop strings is detokenized every step; any other is
decoded once when it finishes, so offline ``generate`` pays no per-token cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from .detokenizer import IncrementalDetokenizer, decode_output
from .engine import LLMEngine
from .sequence import Sequence

logger = logging.getLogger(__name__)


@dataclass
class RequestOutput:
    """What one request produced since its previous output.

    ``text`` and ``token_ids`` are the new piece (deltas); ``finish_reason`` is None
    until the last output: then "stop" (EOS, a stop token or a stop string), "length"
    or "abort". ``num_output_tokens`` counts all tokens generated so far. ``ttft``
    (seconds from arrival to the first token) and ``tpot`` (mean seconds per token
    after the first; None for one token) are set on the last output. ``error`` is set
    (with finish_reason "abort") when this request's output could not be made, e.g.
    its detokenizer raised: the request was aborted, the others go on.
    """

    request_id: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int = 0
    ttft: float | None = None
    tpot: float | None = None
    error: Exception | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestState:
    """The processor's view of one request: how many tokens it has reported, and the
    text so far (held back by up to the longest stop string, which may be completing)."""

    seq: Sequence
    stream: bool
    detokenizer: IncrementalDetokenizer | None
    num_processed_tokens: int = 0  # output tokens detokenized (or seen) so far
    num_reported_tokens: int = 0  # output tokens handed out in RequestOutputs
    # The text in two parts, so that a step's work is bounded by its new text, not by
    # all the text so far: ``pending``, the tail not released yet (its last
    # ``hold_back`` characters may start a stop string: it is all a stop string can end
    # in), and ``released``, the pieces released since the last report.
    pending: str = ""
    released: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    hold_back: int = field(init=False)

    def __post_init__(self) -> None:
        stops = self.seq.sampling_params.stop
        self.hold_back = max(map(len, stops), default=1) - 1


def find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the first of ``stops`` starts in ``text``, or None. Called on a request's
    pending text only (at most the longest stop string less one character, plus the
    step's new text), so a step costs the same however much text came before."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


class RequestSink(Protocol):
    """Where the processor's requests run: an :class:`LLMEngine`, or the API server's
    client of an engine core in another process (``serving/async_llm.py``), which
    keeps each request's :class:`Sequence` up to date from the core's messages."""

    tokenizer: Any

    def add_sequence(self, seq: Sequence) -> None: ...

    def abort(self, seq_id: int, reason: str = "abort") -> None: ...


class OutputProcessor:
    """Reports each tracked request's progress after every engine step.

    Args:
        engine: where the tracked requests run; :meth:`step` (an in-process
            :class:`LLMEngine` only) runs its ``step``, :meth:`process` reads what the
            sequences gained since the last call.
    """

    def __init__(self, engine: LLMEngine | RequestSink) -> None:
        self.engine = engine
        self.states: dict[int, RequestState] = {}

    def add(self, seq: Sequence, stream: bool) -> None:
        """Queue ``seq`` in the engine and track it; ``stream``: report every new piece
        of text (else only the final output)."""
        incremental = stream or bool(seq.sampling_params.stop)
        detokenizer = IncrementalDetokenizer(self.engine.tokenizer, seq.prompt_token_ids) if incremental else None
        self.states[seq.seq_id] = RequestState(seq, stream, detokenizer)
        self.engine.add_sequence(seq)

    def abort(self, seq_id: int) -> None:
        """Stop ``seq_id`` now and forget it (its pages are freed at once)."""
        self.engine.abort(seq_id)
        self.states.pop(seq_id, None)

    def step(self) -> list[RequestOutput]:
        """One engine step; the outputs of requests that advanced or finished in it.

        Raises whatever ``engine.step`` raises; the engine has then aborted the failed
        step's requests, and :meth:`drop_finished` reports them. A request whose own
        output fails (its detokenizer raises) is aborted and reported with ``error``;
        the other requests' outputs of the step are not lost.
        """
        self.engine.step()
        return self.process()

    def process(self) -> list[RequestOutput]:
        """The outputs of the tracked requests that advanced or finished since the last call."""
        outputs = []
        for seq_id, state in list(self.states.items()):
            try:
                output = self._process(state)
            except Exception as err:
                output = self._fail(state, err)
            if output is not None:
                outputs.append(output)
            if state.finish_reason is not None:
                del self.states[seq_id]
        return outputs

    def drop_finished(self) -> list[int]:
        """Forget requests that ended outside :meth:`step` (after a failed step);
        returns their ids."""
        ended = [seq_id for seq_id, state in self.states.items() if state.seq.is_finished]
        for seq_id in ended:
            del self.states[seq_id]
        return ended

    def _process(self, state: RequestState) -> RequestOutput | None:
        seq = state.seq
        new_tokens = seq.token_ids[seq.num_prompt_tokens + state.num_processed_tokens:]
        if not new_tokens and not seq.is_finished:
            return None
        state.num_processed_tokens += len(new_tokens)
        if state.detokenizer is not None:
            state.pending += state.detokenizer.add(new_tokens)
            if seq.is_finished:
                state.pending += state.detokenizer.flush()
            self._check_stop_strings(state)
        if seq.is_finished and state.finish_reason is None:
            state.finish_reason = seq.finish_reason
        if state.detokenizer is None and state.finish_reason is not None:  # finished, decoded once
            state.pending = decode_output(self.engine.tokenizer, seq.prompt_token_ids, seq.output_token_ids)
        self._release(state)
        if state.finish_reason is None and not state.stream:
            return None  # not streaming: only the final output is reported
        return self._output(state)

    def _fail(self, state: RequestState, err: Exception) -> RequestOutput:
        """End a request whose output could not be made: abort it (its pages are freed)
        and report ``err`` as its last output."""
        seq = state.seq
        logger.error("request %d aborted: its output failed", seq.seq_id, exc_info=err)
        self.engine.abort(seq.seq_id)
        state.finish_reason = "abort"
        return RequestOutput(seq.seq_id, "", [], "abort", seq.num_prompt_tokens, state.num_reported_tokens,
                             seq.num_cached_tokens, error=err)

    def _check_stop_strings(self, state: RequestState) -> None:
        """End the request at the first stop string in its pending text; the text is cut there."""
        stops = state.seq.sampling_params.stop
        if not stops or state.finish_reason is not None:
            return
        hit = find_stop(state.pending, stops)
        if hit is not None:
            state.pending = state.pending[:hit]
            state.finish_reason = "stop"
            self.engine.abort(state.seq.seq_id, reason="stop")

    @staticmethod
    def _release(state: RequestState) -> None:
        """Move pending text that no stop string can start in any more (all of it once
        the request has finished) to ``released``."""
        keep = 0 if state.finish_reason is not None else state.hold_back
        cut = len(state.pending) - keep
        if cut > 0:
            state.released.append(state.pending[:cut])
            state.pending = state.pending[cut:]

    def _output(self, state: RequestState) -> RequestOutput:
        seq = state.seq
        start = seq.num_prompt_tokens + state.num_reported_tokens
        new_tokens = seq.token_ids[start:seq.num_prompt_tokens + state.num_processed_tokens]
        finished = state.finish_reason is not None
        text = "".join(state.released)
        state.released.clear()
        state.num_reported_tokens = state.num_processed_tokens
        output = RequestOutput(seq.seq_id, text, new_tokens, state.finish_reason, seq.num_prompt_tokens,
                               state.num_reported_tokens, seq.num_cached_tokens)
        if finished and seq.first_token_time is not None:
            times = seq.token_times
            output.ttft = seq.first_token_time - seq.arrival_time
            output.tpot = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else None
        return output
