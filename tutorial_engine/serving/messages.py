"""The messages between the API server and the engine core process (``engine_core.py``).

Each is a ``msgspec.Struct`` encoded as MessagePack, as vLLM's V1 engine does: a
fraction of pickle's cost, and a decoder that accepts only these types (a message
is data, never code to run). Structs are ``array_like`` (fields by position, no
names on the wire) and tagged, so one decoder tells the kinds of a union apart.

    API server --> core:  EngineCoreRequest | AbortRequests | Shutdown
    core --> API server:  CoreReady | CoreFailed | EngineCoreOutputs (one per step)
"""

from __future__ import annotations

import msgspec

from ..sampling_params import SamplingParams


class EngineCoreRequest(msgspec.Struct, tag="add", array_like=True, frozen=True):
    """A request, tokenized and checked by the API server. ``SamplingParams`` is a
    dataclass: msgspec sends its fields, and decoding runs its checks again."""

    request_id: int
    prompt_token_ids: list[int]
    sampling_params: SamplingParams


class AbortRequests(msgspec.Struct, tag="abort", array_like=True, frozen=True):
    """End these requests now (client gone, stop string found); unknown ids are ignored."""

    request_ids: list[int]


class Shutdown(msgspec.Struct, tag="shutdown", array_like=True, frozen=True):
    """Abort everything, release the device and exit."""


class CoreReady(msgspec.Struct, tag="ready", array_like=True, frozen=True):
    """The core has loaded the model: what the API server needs to check requests."""

    max_model_len: int
    vocab_size: int
    num_kvcache_blocks: int
    kvcache_block_size: int


class CoreFailed(msgspec.Struct, tag="failed", array_like=True, frozen=True):
    """The core could not start; the API server raises ``error_type(message)``."""

    error_type: str
    message: str


class EngineStats(msgspec.Struct, array_like=True, frozen=True):
    """The engine's state after a step, for ``/metrics`` and the benchmark.

    ``cpu_s`` is ``time.process_time()`` of the process that runs the engine loop (the
    whole server, when the loop is a thread of it); ``device_busy_s`` sums the steps
    queued on a simulated device (None on a real one)."""

    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0  # fraction of KV-cache pages held by requests
    num_steps: int = 0
    cpu_s: float = 0.0
    device_busy_s: float | None = None
    spec_decode_num_drafts: int = 0  # speculative decoding (vLLM's names): verify steps per sequence,
    spec_decode_num_draft_tokens: int = 0  # tokens proposed,
    spec_decode_num_accepted_tokens: int = 0  # and tokens accepted


class EngineCoreOutput(msgspec.Struct, array_like=True, frozen=True):
    """What one request got in a step: its new tokens, and on its last output the
    finish reason, or ``error`` when the step failed (the request was aborted)."""

    request_id: int
    new_token_ids: list[int]
    finish_reason: str | None = None
    num_cached_tokens: int = 0
    error: str | None = None


class EngineCoreOutputs(msgspec.Struct, tag="outputs", array_like=True, frozen=True):
    """One step's outputs (only the requests that advanced or ended) and the stats after it."""

    outputs: list[EngineCoreOutput]
    stats: EngineStats


CoreInput = EngineCoreRequest | AbortRequests | Shutdown
CoreOutput = CoreReady | CoreFailed | EngineCoreOutputs
