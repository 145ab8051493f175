"""tutorial_engine: a small, fast LLM inference engine, built chapter by chapter.

The modules in data-flow order: a request enters at the top, is planned on the host,
crosses to the device as a :class:`~tutorial_engine.step_plan.StepPlan` (plain arrays,
no live objects) and comes back as sampled tokens (the number is the chapter that
teaches the module).

=======================  ===============================================================  =======
module                   job                                                              chapter
=======================  ===============================================================  =======
``llm``                  ``LLM``: ``generate`` / ``stream`` over an in-process engine     0
``serving/``             the OpenAI-compatible HTTP server and its engine core process    9
``sampling_params``      ``SamplingParams``, checked when made                            0
``inputs``               prompts to token ids; every request checked before any work      0
``output_processor``     steps to text deltas, stop strings and finish reasons            9
``detokenizer``          token ids to text, a few at a time                               9
``engine``               ``LLMEngine``: the loop, plain or overlapped                     2, 7
``sequence``             ``Sequence``: one request's tokens and progress                  2
``in_flight``            the overlap invariant: tokens in flight and their input rows     7
``scheduler``            continuous batching, token budget, chunked prefill, preemption   2, 5
``block_manager``        ``KVCacheManager``: block tables, computed-token counts          3
``block_allocator``      reference-counted free list of KV blocks                         3
``prefix_cache/``        block hashes and the radix tree                                  4
``metrics``              engine counters and latency summaries                            2
**``step_plan``**        **the host/device boundary**: one step as flat arrays            7
``executor``             runs plans: in this process, or ``tp_executor`` / ``tp_worker``  7, 8
``distributed``          process groups and collectives for tensor parallelism            8
``model_runner``         plan to device inputs, forward (eager or graph), sampling         1, 3, 6
``gpu_memory``           how the KV cache is sized from a profiled worst-case step        3
``cuda_graph``           captured decode steps, replayed                                   6
``transfer``             host-to-device copies that never wait                            7
``models/``              Llama / Qwen2 / Qwen3 decoder, layers, fused Triton kernels      1, 6
``attention/``           paged attention: torch reference, Triton, FlashAttention         3
``spec_decode/``         speculative decoding: proposers, rejection sampler, verify rows  10
``cluster/``             Ray: replicas on Ray Serve, prefix-aware routing, Ray TP ranks   11
``sampler``              logits to tokens: greedy, temperature, top-k, top-p, seeded      0
``loader``               Hugging Face checkpoint folders: config, weights, tokenizer      1
``config``, ``checks``   ``EngineConfig`` and the checks of every option                  0
=======================  ===============================================================  =======

Beside the engine: ``bench/`` and ``experiments/`` measure it (chapter 12 and each
chapter's claim); ``sim/`` is the simulated device (``device="sim"``) that measures the
host side without a GPU (chapters 9 and 11); ``book/`` is the book's tooling (grading,
exercise generation, notebook helpers, steppers, the small trained model).
"""

from .config import EngineConfig
from .llm import LLM
from .sampling_params import SamplingParams

__all__ = ["LLM", "EngineConfig", "SamplingParams"]
__version__ = "0.1.0"
