"""The engine loop: requests in, the scheduler plans a step, the executor runs it.

Two loops over the same pieces (chapter 7):

* the plain loop (``overlap_scheduling=False``): plan step N, run it, wait for its
  tokens, update; the GPU idles while the CPU plans and updates;
* the overlapped loop (the default on a GPU): plan and launch step N+1 *before*
  waiting for step N's tokens, then process step N while the GPU runs N+1, as in
  mini-SGLang's overlap loop, SGLang's zero-overhead scheduler and vLLM's async
  scheduling. A request whose last token is still on the GPU takes it from there
  (``StepPlan`` placeholders); a request that stops on that token has run one extra
  step, whose token is dropped.

With speculative decoding (chapter 10) proposals are drafted from tokens on the CPU,
so the overlapped loop waits for a step that sampled before planning the next
(``in_flight.py`` has the rule); steps that only run prompt chunks stay overlapped.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

from .block_manager import KVCacheManager
from .config import EngineConfig, resolve_dtype
from .executor import Executor, make_executor
from .inputs import Prompt, check_request, prompt_token_ids
from .loader import checkpoint_dtype, decoder_spec, eos_token_ids, load_hf_config, load_tokenizer
from .metrics import Metrics
from .model_runner import StepResult
from .models import DecoderSpec
from .sampling_params import SamplingParams
from .scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from .sequence import Sequence
from .spec_decode import NgramProposer
from .spec_decode.draft import DraftModelProposer
from .step_plan import build_step_plan

logger = logging.getLogger(__name__)


@dataclass
class InFlightStep:
    """A launched step whose tokens have not been processed yet."""

    scheduler_output: SchedulerOutput
    result: StepResult

    @property
    def samples(self) -> bool:
        """Some row of the step samples a token (a decode, a verify or a prompt's last chunk)."""
        return any(item.will_sample for item in self.scheduler_output.scheduled)


class LLMEngine:
    """Loads the checkpoint, sizes the KV cache and runs steps until requests finish.

    Args:
        config: the engine's options.
        executor: where steps run; by default the model of ``config.model`` on one
            device in this process, or split over ``tensor_parallel_size`` processes
            (``executor.make_executor``); tests pass a model-free stand-in.

    Raises:
        FileNotFoundError: the folder lacks config.json or weights.
        ValueError: unsupported architecture, limits that contradict each other, or a
            ``tensor_parallel_size`` the model's heads or the machine's GPUs do not allow.
    """

    def __init__(self, config: EngineConfig, executor: Executor | None = None) -> None:
        self.config = config
        hf_config = load_hf_config(config.model)
        self.spec: DecoderSpec = decoder_spec(hf_config)
        self.max_model_len = self._max_model_len(config, self.spec)
        self.device = config.resolve_device()
        self.dtype = resolve_dtype(config.dtype, checkpoint_dtype(hf_config), self.device)
        self.tokenizer = load_tokenizer(config.model)
        self.eos_token_ids = eos_token_ids(config.model, hf_config, self.tokenizer)
        if config.speculative_config is not None:
            self._check_speculation(config, hf_config)
        self.overlap_scheduling = (config.overlap_scheduling if config.overlap_scheduling is not None
                                   else self.device.type == "cuda")
        self.executor: Executor = executor or make_executor(config, self.spec, self.device, self.dtype,
                                                            self.max_model_len)
        num_blocks = self.executor.num_kvcache_blocks
        self.kv_cache = KVCacheManager(num_blocks, config.kvcache_block_size, config.prefix_caching)
        scheduler_config = SchedulerConfig(config.max_num_seqs, config.max_num_batched_tokens, self.max_model_len,
                                           config.enable_chunked_prefill, config.scheduling_policy)
        self.scheduler = Scheduler(scheduler_config, self.kv_cache, self.eos_token_ids, self._make_proposer())
        self.metrics = Metrics()
        self.requests: dict[int, Sequence] = {}  # unfinished requests by id
        self._in_flight: InFlightStep | None = None
        self._finished_ids: list[int] = []  # told to the executor with the next plan
        self._seq_ids = itertools.count()
        logger.info("KV cache: %d blocks x %d tokens = %d tokens; overlap scheduling %s", num_blocks,
                    config.kvcache_block_size, num_blocks * config.kvcache_block_size,
                    "on" if self.overlap_scheduling else "off")

    @staticmethod
    def _max_model_len(config: EngineConfig, spec: DecoderSpec) -> int:
        limit = spec.max_position_embeddings
        max_model_len = config.max_model_len or limit
        if max_model_len > limit:
            raise ValueError(f"max_model_len={max_model_len} exceeds the model's max_position_embeddings={limit}; "
                             f"lower it to at most {limit}.")
        if not config.enable_chunked_prefill and config.max_num_batched_tokens < max_model_len:
            raise ValueError(
                f"max_num_batched_tokens={config.max_num_batched_tokens} < max_model_len={max_model_len} with "
                "chunked prefill off: a long prompt could never be scheduled. Raise max_num_batched_tokens, "
                "lower max_model_len, or set enable_chunked_prefill=True."
            )
        return max_model_len

    @staticmethod
    def _check_speculation(config: EngineConfig, hf_config) -> None:
        """Refuse what speculative decoding does not support yet, before loading weights."""
        config.speculative_config.check_draft(hf_config)
        if config.device == "sim":
            raise ValueError("speculative_config does not run on device='sim' (its timing model knows no verify "
                             "steps); use device='cpu' or 'cuda'.")

    def _make_proposer(self) -> NgramProposer | DraftModelProposer | None:
        """Prompt lookup, or a draft model in an engine of its own (plain loop, radix
        prefix cache, the target's device, dtype and memory options)."""
        spec_config = self.config.speculative_config
        if spec_config is None:
            return None
        if spec_config.method == "ngram":
            return NgramProposer(spec_config)
        config = self.config
        max_model_len = min(self.max_model_len, decoder_spec(load_hf_config(spec_config.model)).max_position_embeddings)
        # One sequence at a time; twice its pages, so the radix cache keeps the previous call's.
        num_blocks = 2 * -(-max_model_len // config.kvcache_block_size)
        draft_config = EngineConfig(
            model=spec_config.model, device=config.device, dtype=config.dtype, seed=config.seed,
            max_model_len=max_model_len, kvcache_block_size=config.kvcache_block_size, num_kvcache_blocks=num_blocks,
            max_num_seqs=1, prefix_caching="radix", overlap_scheduling=False,
            attention_backend=config.attention_backend, enforce_eager=config.enforce_eager)
        return DraftModelProposer(spec_config, LLMEngine(draft_config))

    @property
    def num_kvcache_blocks(self) -> int:
        return self.kv_cache.allocator.num_blocks

    # -- requests ---------------------------------------------------------------------

    def make_sequence(self, prompt: Prompt, params: SamplingParams) -> Sequence:
        """Tokenise and validate one request (does not queue it); see ``inputs.py``.

        Raises:
            TypeError: a prompt or sampling_params of the wrong type.
            ValueError: empty prompt, prompt longer than ``max_model_len``, token ids
                outside the vocabulary, a text prompt without a tokenizer, or a request
                that could not fit the whole KV cache.
        """
        token_ids = prompt_token_ids(prompt, self.tokenizer, self.spec.vocab_size)
        check_request(token_ids, params, self.max_model_len, self.num_kvcache_blocks, self.config.kvcache_block_size)
        return Sequence(next(self._seq_ids), token_ids, params)

    def add_sequence(self, seq: Sequence) -> None:
        self.requests[seq.seq_id] = seq
        self.scheduler.add(seq)

    def abort(self, seq_id: int, reason: str = "abort") -> None:
        """End request ``seq_id`` now and free its pages; ``reason`` becomes its
        ``finish_reason`` ("stop" when a stop string ended it). Unknown or finished
        ids are ignored. A step already launched with it still runs; its token is dropped."""
        seq = self.requests.get(seq_id)
        if seq is not None:
            self.scheduler.finish(seq, reason)
            del self.requests[seq_id]
            self._finished_ids.append(seq_id)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or self._in_flight is not None

    # -- the loop ---------------------------------------------------------------------

    def step(self) -> list[Sequence]:
        """One iteration of the engine loop; returns the sequences that finished in it.

        If anything raises in the middle (a failing kernel, Ctrl-C), the requests of
        the steps being planned or in flight are aborted, so the engine stays
        consistent and the other requests go on at the next call.
        """
        steps: list[SchedulerOutput] = [self._in_flight.scheduler_output] if self._in_flight is not None else []
        try:
            finished = self._wait_before_planning()
            if not self.has_unfinished():  # the step just completed was the last
                return finished
            scheduler_output = self.scheduler.schedule()
            steps.append(scheduler_output)
            if scheduler_output.is_empty and self._in_flight is None:
                raise RuntimeError("the scheduler found nothing to run although requests are pending")
            if self.overlap_scheduling:
                return finished + self._step_overlapped(scheduler_output)
            return finished + self._step_plain(scheduler_output)
        except BaseException as err:
            aborted = self._abort_steps(steps)
            if aborted and hasattr(err, "add_note"):
                err.add_note(f"tutorial_engine aborted the requests of the failed step: {aborted}")
            raise

    def _wait_before_planning(self) -> list[Sequence]:
        """With speculation on, complete the step in flight first if it sampled: the
        next plan drafts proposals from its tokens, and a verify step's accepted count
        decides where its rows resume (``in_flight.py``). Returns what finished."""
        step = self._in_flight
        if self.config.speculative_config is None or step is None or not step.samples:
            return []
        self._in_flight = None
        return self._complete(step)

    def _step_plain(self, scheduler_output: SchedulerOutput) -> list[Sequence]:
        """Plan, run, wait, update: chapters 2-6."""
        return self._complete(InFlightStep(scheduler_output, self._execute(scheduler_output)))

    def _step_overlapped(self, scheduler_output: SchedulerOutput) -> list[Sequence]:
        """Launch the step just planned, then process the one the GPU ran before it:
        the CPU work of step N+1 (planning, building inputs) happened while the GPU
        ran step N, and processing N's tokens happens while it runs N+1."""
        launched = None
        if not scheduler_output.is_empty:
            launched = InFlightStep(scheduler_output, self._execute(scheduler_output))
        previous, self._in_flight = self._in_flight, launched
        return self._complete(previous) if previous is not None else []

    def _execute(self, scheduler_output: SchedulerOutput) -> StepResult:
        """Build the step's plan and hand it to the executor, which launches it on the device."""
        plan = build_step_plan(scheduler_output, self.config.kvcache_block_size, self._finished_ids)
        result = self.executor.execute(plan)
        self._finished_ids = []  # delivered with the plan (kept if the launch failed)
        self.metrics.record_step(scheduler_output.stats)
        return result

    def _complete(self, step: InFlightStep) -> list[Sequence]:
        """Wait for a step's tokens and hand them to the scheduler."""
        finished = self.scheduler.update_from_output(step.scheduler_output, step.result.token_ids())
        for seq in finished:
            del self.requests[seq.seq_id]
            self._finished_ids.append(seq.seq_id)
        return finished

    def _abort_steps(self, steps: list[SchedulerOutput]) -> list[int]:
        """Abort every request in ``steps`` and forget the step in flight. The K/V those
        steps should have written may be missing, so each request first forgets what
        they computed: its pages up to there are the only ones the prefix cache keeps."""
        self._in_flight = None
        first_start: dict[int, int] = {}
        for scheduler_output in steps:
            for item in scheduler_output.scheduled:
                first_start[item.seq.seq_id] = min(item.start, first_start.get(item.seq.seq_id, item.start))
        aborted = sorted(seq_id for seq_id in first_start if seq_id in self.requests)
        for seq_id in aborted:
            self.kv_cache.forget_computed(self.requests[seq_id], first_start[seq_id])
            self.abort(seq_id)
        return aborted

    def shutdown(self) -> None:
        """Abort what is left and give the device memory back."""
        for seq_id in list(self.requests):
            self.abort(seq_id)
        self._in_flight = None
        self.executor.shutdown()
        if isinstance(self.scheduler.proposer, DraftModelProposer):
            self.scheduler.proposer.engine.shutdown()

    def get_metrics(self) -> dict:
        """The engine's counters; with speculation on, vLLM's ``spec_decode_*`` counters too."""
        metrics = self.metrics.as_dict()
        if self.config.speculative_config is not None:
            metrics.update(self.scheduler.spec_decode_stats.as_dict())
        return metrics

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True) if self.tokenizer else ""
