"""How many prompt tokens a prefix cache serves: hashing vs a radix tree, on a CPU.

Three workloads where prompts repeat (seeded, token ids only):

* ``shared_system_prompt``: every request = one system prompt + its own question;
* ``multi_turn``: conversations whose next prompt is the whole history (earlier
  prompts and answers) plus a new message;
* ``divergent_prefixes``: requests take a random-length beginning of one document
  (think few-shot examples or tree-of-thought branches) and then go their own way,
  so they diverge at arbitrary offsets, usually in the middle of a block.

Requests arrive one after another (a *wave* is sent when the previous one finished).
:func:`replay` runs a workload on anything with ``LLM``'s interface. Which tokens are
cached does not depend on the model's numbers, so :class:`StandInEngine` runs the
engine's real :class:`Scheduler` and :class:`KVCacheManager` (hence the real prefix
caches) with the forward pass replaced by a deterministic stand-in token: the same
counts as ``LLM`` in milliseconds (the chapter checks one against the other).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from ..block_manager import KVCacheManager
from ..metrics import Metrics
from ..sampling_params import SamplingParams
from ..scheduler import Scheduler, SchedulerConfig
from ..sequence import Sequence


@dataclass(frozen=True)
class Turn:
    """One request: ``new_tokens`` after the history (prompts and answers so far) of
    ``conversation``, or a fresh prompt when ``conversation`` is None."""

    new_tokens: tuple[int, ...]
    max_tokens: int
    conversation: int | None = None


Workload = list[list[Turn]]  # waves of requests; a wave starts when the previous one finished


def _tokens(rng: random.Random, n: int, vocab_size: int) -> tuple[int, ...]:
    return tuple(rng.randrange(3, vocab_size) for _ in range(n))


def shared_system_prompt(seed: int = 0, num_requests: int = 32, system_len: int = 200,
                         question_lens: tuple[int, int] = (10, 60), vocab_size: int = 500) -> Workload:
    """``num_requests`` prompts = one ``system_len``-token system prompt + a question."""
    rng = random.Random(seed)
    system = _tokens(rng, system_len, vocab_size)
    return [[Turn(system + _tokens(rng, rng.randint(*question_lens), vocab_size), 8)] for _ in range(num_requests)]


def multi_turn(seed: int = 0, num_conversations: int = 8, num_turns: int = 4,
               message_lens: tuple[int, int] = (20, 60), answer_len: int = 24, vocab_size: int = 500) -> Workload:
    """Conversations taking turns (conversation 0's turn 1, 1's turn 1, ...); each
    prompt is the conversation so far plus a new message, each answer ``answer_len``."""
    rng = random.Random(seed)
    return [[Turn(_tokens(rng, rng.randint(*message_lens), vocab_size), answer_len, conversation=c)]
            for _ in range(num_turns) for c in range(num_conversations)]


def divergent_prefixes(seed: int = 0, num_requests: int = 32, max_shared: int = 256, tail_len: int = 32,
                       vocab_size: int = 500) -> Workload:
    """Prompts = the first ``k`` tokens of one document, ``k`` uniform in
    ``[0, max_shared]``, then ``tail_len`` tokens of their own."""
    rng = random.Random(seed)
    document = _tokens(rng, max_shared, vocab_size)
    return [[Turn(document[: rng.randint(0, max_shared)] + _tokens(rng, tail_len, vocab_size), 8)]
            for _ in range(num_requests)]


WORKLOADS = {"shared system prompt": shared_system_prompt, "multi-turn chat": multi_turn,
             "divergent prefixes": divergent_prefixes}


@dataclass
class CacheStats:
    """Token counts of one replay (``get_metrics()`` counters, summed over requests)."""

    prompt_tokens: int
    queried_tokens: int
    hit_tokens: int
    prefill_tokens: int

    @property
    def hit_rate(self) -> float:
        """Fraction of the looked-up tokens the cache served."""
        return self.hit_tokens / self.queried_tokens if self.queried_tokens else 0.0


def replay(engine, workload: Workload) -> CacheStats:
    """Send ``workload`` to ``engine`` (an ``LLM`` or a :class:`StandInEngine`), wave
    by wave, threading each conversation's history through its turns."""
    history: dict[int, list[int]] = {}
    prompt_tokens = 0
    for wave in workload:
        prompts = [history.get(t.conversation, []) + list(t.new_tokens) if t.conversation is not None
                   else list(t.new_tokens) for t in wave]
        params = [SamplingParams(temperature=0.0, max_tokens=t.max_tokens, ignore_eos=True) for t in wave]
        outputs = engine.generate(prompts, params, use_tqdm=False)
        for turn, prompt, out in zip(wave, prompts, outputs):
            prompt_tokens += len(prompt)
            if turn.conversation is not None:
                history[turn.conversation] = prompt + out["token_ids"]
    metrics = engine.get_metrics()
    return CacheStats(prompt_tokens, metrics["prefix_cache_queried_tokens"], metrics["prefix_cache_hit_tokens"],
                      metrics["num_prefill_tokens"])


class StandInEngine:
    """``LLM``'s ``generate`` / ``get_metrics`` over the real scheduler and KV-cache
    manager, with no model: the "sampled" token is a fixed function of the request
    and its length, so every prefix-caching mode sees identical tokens.

    Args:
        prefix_caching: "none" | "hash" | "radix".
        kvcache_block_size: tokens per page.
        num_kvcache_blocks: pages in the cache (default: enough never to evict).
        max_num_batched_tokens: the per-step token budget.
    """

    def __init__(self, prefix_caching: str, kvcache_block_size: int, num_kvcache_blocks: int = 1 << 16,
                 max_num_batched_tokens: int = 8192) -> None:
        config = SchedulerConfig(max_num_seqs=256, max_num_batched_tokens=max_num_batched_tokens, max_model_len=1 << 20)
        self.metrics = Metrics()
        self.kv_cache = KVCacheManager(num_kvcache_blocks, kvcache_block_size, prefix_caching)
        self.scheduler = Scheduler(config, self.kv_cache, set())
        self._seq_ids = itertools.count()

    def generate(self, prompts: list[list[int]], params: list[SamplingParams], use_tqdm: bool = False) -> list[dict]:
        """Run the requests to completion. Raises ValueError, as ``LLM`` does, for a
        request that could not fit the whole cache (it would be preempted forever)."""
        capacity = self.kv_cache.allocator.num_blocks * self.kv_cache.block_size
        for prompt, sp in zip(prompts, params):
            if len(prompt) + sp.max_tokens > capacity:
                raise ValueError(f"a request of up to {len(prompt) + sp.max_tokens} tokens cannot fit the KV cache "
                                 f"of {capacity} tokens; raise num_kvcache_blocks.")
        seqs = [Sequence(next(self._seq_ids), p, sp) for p, sp in zip(prompts, params)]
        for seq in seqs:
            self.scheduler.add(seq)
        while self.scheduler.has_unfinished():
            out = self.scheduler.schedule()
            self.metrics.record_step(out.stats)
            sampled = [(s.seq.seq_id * 7919 + s.seq.num_tokens) % 500 for s in out.scheduled if s.will_sample]
            self.scheduler.update_from_output(out, sampled)
        return [{"token_ids": s.output_token_ids, "num_cached_tokens": s.num_cached_tokens} for s in seqs]

    def get_metrics(self) -> dict:
        return self.metrics.as_dict()


def hit_rate_table(configs: list[tuple[str, int]], seed: int = 0) -> list[dict]:
    """One row per workload x (mode, block size): hit rate and prefill tokens."""
    rows = []
    for name, make in WORKLOADS.items():
        workload = make(seed)
        for mode, block_size in configs:
            stats = replay(StandInEngine(mode, block_size), workload)
            rows.append({"workload": name, "mode": mode, "block_size": block_size, "hit_rate": stats.hit_rate,
                         "hit_tokens": stats.hit_tokens, "prefill_tokens": stats.prefill_tokens,
                         "prompt_tokens": stats.prompt_tokens})
    return rows
