"""The user-facing entry point: ``LLM(model=PATH).generate(prompts, params)``."""

from __future__ import annotations

import threading

from tqdm.auto import tqdm

from .config import EngineConfig
from .engine import LLMEngine
from .inputs import Prompt, normalize_batch
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
        ``text``, ``token_ids``, ``prompt_token_ids``, ``finish_reason`` ("stop" or
        "length"), ``num_cached_tokens`` (prompt tokens served by the prefix cache),
        ``ttft`` (seconds from submission to the first token), ``itl`` (seconds
        between consecutive later tokens) and ``tpot`` (their mean, time per output
        token after the first; None for a one-token output). Summarize many with
        :func:`tutorial_engine.metrics.summarize_latency`.
        """
        prompts, params = normalize_batch(prompts, sampling_params)
        seqs = [self.engine.make_sequence(p, sp) for p, sp in zip(prompts, params)]
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("this LLM is already generating in another thread; an engine runs one loop at "
                               "a time: wait for that call, or give each thread its own LLM.")
        try:
            self._run(seqs, use_tqdm)
        finally:
            self._busy.release()
        return [self._output(seq) for seq in seqs]

    def _run(self, seqs: list[Sequence], use_tqdm: bool) -> None:
        """Run the engine until ``seqs`` finish. On any exception (Ctrl-C included) the
        call's unfinished requests are aborted, so the next call starts clean."""
        for seq in seqs:
            self.engine.add_sequence(seq)
        try:
            with tqdm(total=len(seqs), desc="Generating", disable=not use_tqdm, dynamic_ncols=True) as bar:
                while self.engine.has_unfinished():
                    bar.update(len(self.engine.step()))
        except BaseException:
            for seq in seqs:
                self.engine.abort(seq.seq_id)
            raise

    def _output(self, seq: Sequence) -> dict:
        times = [seq.arrival_time, *seq.token_times]
        return {
            "text": self.engine.decode(seq.output_token_ids),
            "token_ids": seq.output_token_ids,
            "prompt_token_ids": seq.prompt_token_ids,
            "finish_reason": seq.finish_reason,
            "num_cached_tokens": seq.num_cached_tokens,
            "ttft": seq.first_token_time - seq.arrival_time,
            "itl": [b - a for a, b in zip(times[1:], times[2:])],
            "tpot": (times[-1] - times[1]) / (len(times) - 2) if len(times) > 2 else None,
        }

    def shutdown(self) -> None:
        """Free the model, KV cache and CUDA graphs now (also on leaving a ``with`` block)."""
        self.engine.shutdown()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()

    def get_metrics(self) -> dict:
        """Cumulative counters: steps, prefill/decode tokens, preemptions, prefix-cache
        queried/hit tokens, chunked-prefill steps, batched tokens per step."""
        return self.engine.metrics.as_dict()
