"""The engine loop: requests in, scheduler plans a step, model runner executes it."""

from __future__ import annotations

import itertools
import logging
import math

import torch

from .block_manager import KVCacheManager
from .config import EngineConfig, resolve_dtype
from .cuda_graph import graphs_unavailable_reason
from .gpu_memory import MemoryProfile, profile_memory
from .inputs import Prompt, check_request, prompt_token_ids
from .loader import checkpoint_dtype, decoder_spec, eos_token_ids, load_hf_config, load_tokenizer, load_weights
from .metrics import Metrics
from .model_runner import ModelRunner, kv_cache_bytes_per_block
from .models import CausalLM, DecoderSpec
from .sampling_params import SamplingParams
from .scheduler import Scheduler
from .sequence import Sequence

logger = logging.getLogger(__name__)


class LLMEngine:
    """Loads the checkpoint, sizes the KV cache and runs steps until requests finish.

    Raises:
        FileNotFoundError: the folder lacks config.json or weights.
        ValueError: unsupported architecture, or limits that contradict each other.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        hf_config = load_hf_config(config.model)
        self.spec: DecoderSpec = decoder_spec(hf_config)
        self.max_model_len = self._max_model_len(config, self.spec)
        self.device = config.resolve_device()
        self.dtype = resolve_dtype(config.dtype, checkpoint_dtype(hf_config), self.device)
        self.tokenizer = load_tokenizer(config.model)
        self.eos_token_ids = eos_token_ids(config.model, hf_config, self.tokenizer)
        model = build_model(self.spec, config, self.device, self.dtype)
        self.model_runner = ModelRunner(config, model, self.device, self.max_model_len)
        self.memory_profile: MemoryProfile | None = None
        num_blocks = config.num_kvcache_blocks or self._auto_num_blocks()
        self.model_runner.allocate_kv_cache(num_blocks)
        self.model_runner.capture_cuda_graphs()
        self.metrics = Metrics()
        self.kv_cache = KVCacheManager(num_blocks, config.kvcache_block_size, config.prefix_caching)
        self.scheduler = Scheduler(config, self.max_model_len, self.kv_cache, self.eos_token_ids, self.metrics)
        self._seq_ids = itertools.count()
        logger.info("KV cache: %d blocks x %d tokens = %d tokens", num_blocks, config.kvcache_block_size,
                    num_blocks * config.kvcache_block_size)

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

    @property
    def num_kvcache_blocks(self) -> int:
        return self.kv_cache.allocator.num_blocks

    def _auto_num_blocks(self) -> int:
        """KV pages from the memory budget: on a CPU ``cpu_kvcache_space_gib`` (but no
        more than every sequence at full length needs); on a GPU what
        ``gpu_memory_utilization`` of the card leaves after the weights and a profiled
        worst-case step (see ``gpu_memory.py``)."""
        per_block = kv_cache_bytes_per_block(self.spec, self.config.kvcache_block_size, self.dtype,
                                             max(1, self.spec.num_kv_heads // self.config.tensor_parallel_size))
        if self.device.type == "cuda":
            with_graphs = graphs_unavailable_reason(self.config, self.device, self.model_runner.backend) is None
            self.memory_profile = profile_memory(self.model_runner, self.max_model_len, per_block, with_graphs)
            logger.info("GPU memory (GiB): %s", self.memory_profile.as_gib())
            budget = self.memory_profile.kv_cache
        else:
            budget = self.config.cpu_kvcache_space_gib * 2**30
        full = self.config.max_num_seqs * math.ceil(self.max_model_len / self.config.kvcache_block_size)
        num_blocks = min(int(budget // per_block), full)
        if num_blocks < 1:
            raise ValueError(f"no memory is left for the KV cache after loading the model; raise "
                             f"{'gpu_memory_utilization' if self.device.type == 'cuda' else 'cpu_kvcache_space_gib'} "
                             "or use a smaller model / dtype.")
        return num_blocks

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
        self.scheduler.add(seq)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self) -> list[Sequence]:
        """Plan and run one step; returns the sequences that finished in it."""
        out = self.scheduler.schedule()
        if out.is_empty:
            raise RuntimeError("the scheduler found nothing to run although requests are pending")
        finished = self.scheduler.update(out, self.model_runner.execute(out))
        for seq in finished:
            self.model_runner.sampler.forget(seq.seq_id)
        return finished

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True) if self.tokenizer else ""


def build_model(spec: DecoderSpec, config: EngineConfig, device: torch.device, dtype: torch.dtype) -> CausalLM:
    """Create the model directly on ``device`` in ``dtype`` and fill its weights,
    from the checkpoint or (``load_format="dummy"``) with seeded random values."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = CausalLM(spec)
    finally:
        torch.set_default_dtype(previous)
    if config.load_format == "dummy":
        init_dummy_weights(model, config.seed)
    else:
        load_weights(model, config.model)
    return model.eval()


def init_dummy_weights(model: CausalLM, seed: int) -> None:
    """Random weights (normal, std 0.02; norms at 1) for speed tests without a checkpoint."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            param.data.fill_(1.0)
        else:
            param.data.copy_(torch.randn(param.shape, generator=generator) * 0.02)
