"""The user-facing entry point: ``LLM(model=PATH).generate(prompts, params)``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

from .config import EngineConfig
from .engine import LLMEngine
from .inputs import Prompt, normalize_batch
from .output_processor import OutputProcessor, RequestOutput
from .sampling_params import SamplingParams
from .sequence import Sequence


class LLM:
    """An offline inference engine over one checkpoint, with vLLM's interface.

    Args:
        model: path of a Hugging Face checkpoint folder.
        **config: any :class:`EngineConfig` field, e.g. ``max_num_seqs``,
            ``num_kvcache_blocks``, ``attention_backend``, ``device``, ``dtype``.

    Raises:
        FileNotFoundError, ValueError: before loading anything heavy, when the folder
            or a setting is wrong (the message names the value and the fix).
    """

    def __init__(self, model: str, **config) -> None:
        unknown = set(config) - set(EngineConfig.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown LLM options {sorted(unknown)}; see tutorial_engine.EngineConfig for the list.")
        self.engine = LLMEngine(EngineConfig(model=str(model), **config))
        self.tokenizer = self.engine.tokenizer
        self._busy = threading.Lock()
        self._holder: tuple[int, str] | None = None  # (thread id, "generate" or "stream") while busy
        self._closed = False

    def generate(
        self,
        prompts: Prompt | list[Prompt],
        sampling_params: SamplingParams | list[SamplingParams] | None = None,
        use_tqdm: bool = True,
    ) -> list[dict]:
        """Generate a completion for each prompt: text, token ids (a list, or a 1-D
        integer array or tensor) or a ``{"prompt": ...}`` / ``{"prompt_token_ids": ...}``
        dict; one prompt or a list of them (see ``inputs.py``).

        Every prompt is validated before any runs, so one bad prompt raises
        ValueError or TypeError without starting work. Returns, in input order, dicts with
        ``text``, ``token_ids``, ``prompt_token_ids``, ``finish_reason`` ("stop": EOS, a
        stop token or a stop string, which is cut from the text; or "length"),
        ``num_cached_tokens`` (prompt tokens served by the prefix cache), ``ttft`` (seconds from submission to the first token), ``itl`` (seconds
        between consecutive later tokens) and ``tpot`` (their mean, time per output
        token after the first; None for a one-token output). Summarize many with
        :func:`tutorial_engine.metrics.summarize_latency`.
        """
        self._check_open()
        prompts, params = normalize_batch(prompts, sampling_params)
        seqs = [self.engine.make_sequence(p, sp) for p, sp in zip(prompts, params)]
        with self._exclusive("generate"):
            outputs = self._run(seqs, use_tqdm)
        return [self._output(seq, outputs[seq.seq_id]) for seq in seqs]

    def stream(self, prompt: Prompt, sampling_params: SamplingParams | None = None) -> Iterator[str]:
        """Generate a completion for one prompt, yielding its text piece by piece as
        tokens arrive; the pieces join to the ``text`` that ``generate`` returns.

        The engine is busy until the stream ends or is closed (``break`` out of the
        loop, or ``.close()``); closing early aborts the request and frees its pages.

        Raises:
            TypeError, ValueError: a bad prompt or sampling_params, at the call (before
                anything runs).
            RuntimeError: after :meth:`shutdown`; or, at the first piece, while another
                call of this LLM is running (another stream left open included).
        """
        self._check_open()
        seq = self.engine.make_sequence(prompt, sampling_params or SamplingParams())
        return self._stream(seq)

    def _stream(self, seq: Sequence) -> Iterator[str]:
        with self._exclusive("stream"):
            processor = OutputProcessor(self.engine)
            processor.add(seq, stream=True)
            try:
                while True:
                    for out in processor.step():
                        if out.error is not None:
                            raise out.error
                        if out.text:
                            yield out.text
                        if out.finished:
                            return
            finally:
                processor.abort(seq.seq_id)  # a no-op once finished

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this LLM has been shut down (shutdown() or the end of its `with` block); "
                               "create a new LLM(...) to generate again.")

    @contextmanager
    def _exclusive(self, call: str) -> Iterator[None]:
        """One engine loop at a time; ``call`` names this one for the error of the next."""
        if not self._busy.acquire(blocking=False):
            holder = self._holder
            if holder == (threading.get_ident(), "stream"):
                raise RuntimeError("a stream() of this LLM is still open in this thread, and an engine runs one "
                                   "loop at a time: read that stream to the end or close it (.close()) first.")
            raise RuntimeError("this LLM is already generating in another thread; an engine runs one loop at "
                               "a time: wait for that call, or give each thread its own LLM.")
        self._holder = (threading.get_ident(), call)
        try:
            yield
        finally:
            self._holder = None
            self._busy.release()

    def _run(self, seqs: list[Sequence], use_tqdm: bool) -> dict[int, RequestOutput]:
        """Run the engine until ``seqs`` finish; returns their final outputs by id. On
        any exception (Ctrl-C included) the call's unfinished requests are aborted, so
        the next call starts clean."""
        processor = OutputProcessor(self.engine)
        for seq in seqs:
            processor.add(seq, stream=False)
        outputs = {}
        try:
            with tqdm(total=len(seqs), desc="Generating", disable=not use_tqdm, dynamic_ncols=True) as bar:
                while self.engine.has_unfinished():
                    finished = processor.step()
                    failed = next((out.error for out in finished if out.error is not None), None)
                    if failed is not None:
                        raise failed
                    outputs.update((out.request_id, out) for out in finished)
                    bar.update(len(finished))
        except BaseException:
            for seq in seqs:
                self.engine.abort(seq.seq_id)
            raise
        return outputs

    @staticmethod
    def _output(seq: Sequence, out: RequestOutput) -> dict:
        times = [seq.arrival_time, *seq.token_times]
        return {
            "text": out.text,
            "token_ids": seq.output_token_ids,
            "prompt_token_ids": seq.prompt_token_ids,
            "finish_reason": out.finish_reason,
            "num_cached_tokens": seq.num_cached_tokens,
            "ttft": seq.first_token_time - seq.arrival_time,
            "itl": [b - a for a, b in zip(times[1:], times[2:])],
            "tpot": (times[-1] - times[1]) / (len(times) - 2) if len(times) > 2 else None,
            "num_draft_tokens": seq.spec_decode_stats.num_draft_tokens,  # proposals verified (speculative decoding)
            "num_accepted_tokens": seq.spec_decode_stats.num_accepted_tokens,
        }

    def shutdown(self) -> None:
        """Free the model, KV cache and CUDA graphs now (also on leaving a ``with`` block).
        A second call does nothing; ``generate`` and ``stream`` afterwards raise RuntimeError."""
        if not self._closed:
            self._closed = True
            self.engine.shutdown()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def get_metrics(self) -> dict:
        """Cumulative counters: steps, prefill/decode tokens, preemptions, prefix-cache
        queried/hit tokens, chunked-prefill steps, batched tokens per step; with
        ``speculative_config``, vLLM's ``spec_decode_num_drafts``,
        ``spec_decode_num_draft_tokens``, ``spec_decode_num_accepted_tokens`` (and per
        position), the acceptance rate and the mean accepted length per verify row."""
        return self.engine.get_metrics()
