"""What chunked prefill buys on a long prompt: peak memory and decode stalls.

With Qwen3-0.6B-shaped random weights (``load_format="dummy"``: speed and memory do
not depend on weight values) this command measures:

1. **Peak memory vs chunk size.** One long prompt (default 32,768 tokens) is
   prefilled with ``max_num_batched_tokens`` = 512 ... the whole prompt. For each
   chunk size: ``torch.cuda.max_memory_allocated`` above what the engine holds at
   rest (weights + KV cache), i.e. the step's activations, next to the analytic
   :func:`activation_bytes`; and the prefill's wall time (the throughput cost of a
   small budget). Once per attention backend (``torch`` reference and ``auto``).
2. **Decode stalls.** ``num_decodes`` requests are decoding when the long prompt
   arrives. Without chunking its prefill is one step that every running request
   waits for; with chunking (Sarathi-Serve, Agrawal et al., OSDI 2024) each step
   carries the decodes plus a chunk of the prompt. Per step: wall time, batched
   tokens, prompt tokens; per request: TTFT and inter-token latencies.

Usage: ``python -m tutorial_engine.experiments.chunked_prefill`` on a CUDA GPU writes
``book/data/chunked_prefill_h200.json`` (GPU name, torch/triton versions, date).
``--small`` runs a seconds-long version with a tiny Qwen3 shape, also on a CPU
(memory columns are then null), to check the command before spending GPU time.
"""

from __future__ import annotations

import argparse
import datetime
import random
import tempfile
import time
from pathlib import Path

import torch

from .. import LLM, SamplingParams
from ..bench.models import QWEN3_0_6B_CONFIG, write_config_folder
from ..models import DecoderSpec
from . import triton_version, write_json

DEFAULT_OUT = Path(__file__).resolve().parents[2] / "book" / "data" / "chunked_prefill_h200.json"

QWEN3_0_6B = QWEN3_0_6B_CONFIG
# The same architecture at toy size, for --small and for the book's CPU runs.
TINY_QWEN3 = {**QWEN3_0_6B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 4096,
              "bos_token_id": 1, "eos_token_id": 2}


def activation_bytes(spec: DecoderSpec, num_tokens: int, itemsize: int, num_sampled: int = 1) -> int:
    """Analytic peak activation memory of one step of ``num_tokens`` new tokens, in bytes.

    Layers run one after another and free their intermediates, so the peak is one
    layer's widest moment, the MLP: the layer's input and residual (still held by the
    caller), the new residual and its normalised copy (4 x hidden), the gate/up
    projection (2 x intermediate) and the SiLU and product outputs (2 x intermediate),
    all ``[num_tokens, .]`` in the model dtype; plus float32 logits for the
    ``num_sampled`` rows that sample. A lower bound: float32 temporaries of RMSNorm
    and RoPE add more per token (measured 1.45x this on an H200). Fused (flash-style)
    attention adds no ``num_tokens x context`` term; the ``torch`` reference backend
    does (dense scores), which the measurement shows.
    """
    per_token = 4 * spec.hidden_size + 4 * spec.intermediate_size
    return num_tokens * per_token * itemsize + num_sampled * spec.vocab_size * 4


def all_logits_bytes(spec: DecoderSpec, num_tokens: int) -> int:
    """Float32 logits for every prompt token (what a plain ``model(input_ids)`` forward
    of transformers returns), in bytes; the engine computes only the sampled rows."""
    return num_tokens * spec.vocab_size * 4


def random_prompt(length: int, vocab_size: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(vocab_size) for _ in range(length)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prefill_memory_sweep(model_dir: Path, prompt_len: int, chunk_sizes: list[int], backend: str) -> list[dict]:
    """Prefill one ``prompt_len``-token prompt once per chunk size; see the module doc.

    One engine serves the whole sweep: its token budget is set before each run (the
    scheduler reads it every step, and nothing else depends on it with the KV cache
    sized explicitly), which saves re-initialising 0.6B random weights per size.
    Returns rows with ``chunk``, ``steps``, ``seconds``, ``tokens_per_s`` and, on a
    GPU, ``peak_extra_bytes`` (activations above weights + KV cache); a chunk size
    that runs out of GPU memory gives a row with ``oom`` and the error's first line,
    and ends the sweep (the sizes ascend, so larger ones would too).
    """
    block_size = 16
    llm = LLM(str(model_dir), load_format="dummy", attention_backend=backend, enforce_eager=True, max_num_seqs=1,
              max_model_len=prompt_len + 16, max_num_batched_tokens=max(chunk_sizes), kvcache_block_size=block_size,
              num_kvcache_blocks=-(-(prompt_len + 16) // block_size))
    engine = llm.engine
    device = engine.device
    params = SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)
    prompt = random_prompt(prompt_len, engine.spec.vocab_size, seed=0)
    llm.generate([prompt[:2 * min(chunk_sizes)]], params, use_tqdm=False)  # warm-up: kernels compile here
    rows = []
    for chunk in chunk_sizes:
        engine.scheduler.token_budget = chunk
        steps_before = engine.metrics.num_steps
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            resident = torch.cuda.memory_allocated(device)
        start = time.perf_counter()
        try:
            llm.generate([prompt], params, use_tqdm=False)
        except torch.OutOfMemoryError as error:  # the torch backend's dense scores at long chunks
            rows.append({"chunk": chunk, "oom": True, "error": str(error).split("\n")[0][:200]})
            print(f"{backend:6s} chunk {chunk:6d}: out of memory", flush=True)
            llm = engine = None  # frees the engine with its half-done request
            torch.cuda.empty_cache()
            break
        _sync(device)
        seconds = time.perf_counter() - start
        row = {"chunk": chunk, "steps": engine.metrics.num_steps - steps_before, "seconds": round(seconds, 4),
               "tokens_per_s": round(prompt_len / seconds, 1), "peak_extra_bytes": None}
        if device.type == "cuda":
            row["peak_extra_bytes"] = torch.cuda.max_memory_allocated(device) - resident
            row["resident_bytes"] = resident
        row["analytic_bytes"] = activation_bytes(engine.spec, min(chunk, prompt_len), engine.dtype.itemsize)
        rows.append(row)
        print(f"{backend:6s} chunk {chunk:6d}: {row['steps']:3d} steps {seconds * 1e3:8.1f} ms "
              f"peak extra {_gib(row['peak_extra_bytes'])} analytic {_gib(row['analytic_bytes'])}", flush=True)
    return rows


def decode_stall(model_dir: Path, chunked: bool, budget: int, num_decodes: int, decode_prompt_len: int,
                 long_prompt_len: int, warmup_steps: int, steps_after: int, backend: str = "auto",
                 load_format: str = "dummy") -> dict:
    """``num_decodes`` requests are prefilled, then decode; after ``warmup_steps``
    recorded decode steps a ``long_prompt_len`` prompt arrives. Runs until it has ``1 + steps_after`` output tokens.

    Returns ``steps`` (per step: wall ``seconds``, ``num_batched_tokens``,
    ``prompt_tokens`` of the long prompt in it, ``first_token``: the long prompt's
    first token came out), ``arrival_step``, ``long_ttft_s``, ``long_ttft_steps``
    and ``decode_itl_s`` (every inter-token gap of the decoding requests that ends
    after the arrival). Without chunking the budget is raised to cover the prompt.
    """
    block_size = 16
    max_model_len = long_prompt_len + 16
    budget = budget if chunked else max(budget, max_model_len)
    max_steps = (-(-num_decodes * decode_prompt_len // budget) + warmup_steps + 1 + steps_after
                 + -(-long_prompt_len // max(1, budget - num_decodes)))
    blocks = num_decodes * -(-(decode_prompt_len + max_steps) // block_size) + -(-max_model_len // block_size)
    llm = LLM(str(model_dir), load_format=load_format, attention_backend=backend, enforce_eager=True,
              enable_chunked_prefill=chunked, max_num_batched_tokens=budget, max_num_seqs=num_decodes + 1,
              max_model_len=max_model_len, kvcache_block_size=block_size, num_kvcache_blocks=blocks)
    engine = llm.engine
    vocab = engine.spec.vocab_size
    params = SamplingParams(temperature=0, max_tokens=max_steps, ignore_eos=True)
    decodes = [engine.make_sequence(random_prompt(decode_prompt_len, vocab, seed=i + 1), params)
               for i in range(num_decodes)]
    for seq in decodes:
        engine.add_sequence(seq)
    while any(seq.num_output_tokens == 0 for seq in decodes):  # their prefills (and kernel compilation)
        engine.step()
    steps: list[dict] = []
    long_seq = None
    while long_seq is None or long_seq.num_output_tokens < 1 + steps_after:
        if long_seq is None and len(steps) == warmup_steps:
            long_seq = engine.make_sequence(random_prompt(long_prompt_len, vocab, seed=0), params)
            engine.add_sequence(long_seq)
        prefilling = long_seq is not None and long_seq.num_output_tokens == 0
        computed_before = long_seq.num_computed_tokens if prefilling else 0
        start = time.perf_counter()
        engine.step()  # ends with the sampled tokens on the host, so the device is done
        seconds = time.perf_counter() - start
        steps.append({"seconds": round(seconds, 5), "num_batched_tokens": engine.metrics.batched_tokens_per_step[-1],
                      "prompt_tokens": long_seq.num_computed_tokens - computed_before if prefilling else 0,
                      "first_token": prefilling and long_seq.num_output_tokens == 1})
    first_token_step = next(i for i, step in enumerate(steps) if step["first_token"])
    arrival = long_seq.arrival_time
    itl = [b - a for seq in decodes for a, b in zip(seq.token_times, seq.token_times[1:]) if b > arrival]
    return {
        "chunked": chunked, "budget": budget, "num_decodes": num_decodes, "decode_prompt_len": decode_prompt_len,
        "long_prompt_len": long_prompt_len, "arrival_step": warmup_steps,
        "long_ttft_s": round(long_seq.first_token_time - arrival, 5),
        "long_ttft_steps": first_token_step - warmup_steps + 1,
        "decode_itl_s": [round(x, 5) for x in itl], "steps": steps, "backend": engine.executor.runner.backend.name,
    }


def _gib(num_bytes: int | None) -> str:
    return "   n/a   " if num_bytes is None else f"{num_bytes / 2**30:7.3f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write")
    parser.add_argument("--small", action="store_true", help="tiny shapes: a quick check that runs on a CPU too")
    parser.add_argument("--backends", default="auto,torch", help="attention backends for the memory sweep")
    args = parser.parse_args()
    if not args.small and not torch.cuda.is_available():
        raise SystemExit("chunked_prefill needs a CUDA GPU (or --small); the book plots the committed JSON instead.")
    config = TINY_QWEN3 if args.small else QWEN3_0_6B
    prompt_len = 2048 if args.small else 32768
    chunk_sizes = [c for c in (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768) if c <= prompt_len]
    if not args.small:
        chunk_sizes = chunk_sizes[2:]
    stall = dict(num_decodes=8 if args.small else 32, decode_prompt_len=128 if args.small else 512,
                 long_prompt_len=prompt_len, warmup_steps=8, steps_after=8)
    budget = 256 if args.small else 2048
    result = {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "triton": triton_version(),
        "date": datetime.date.today().isoformat(),
        "model": "tiny Qwen3 shape, random weights" if args.small else "Qwen3-0.6B shape, random weights (load_format='dummy')",
        "model_config": config,
        "dtype": "bfloat16" if torch.cuda.is_available() else "float32",
        "prompt_len": prompt_len,
        "memory": {},
        "decode_stall": [],
    }
    backends = args.backends.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_config_folder(tmp, config)
        # Most telling first; the file is rewritten after each part, so a run cut short keeps what it measured.
        result["memory"][backends[0]] = prefill_memory_sweep(model_dir, prompt_len, chunk_sizes, backends[0])
        write_json(result, args.out)
        for chunked in (False, True):  # unrecorded: Triton compiles each new kernel variant here
            decode_stall(model_dir, chunked, budget, **{**stall, "warmup_steps": 2, "steps_after": 2})
        for chunked in (False, True):
            run = decode_stall(model_dir, chunked, budget, **stall)
            result["decode_stall"].append(run)
            write_json(result, args.out)
            itl = sorted(run["decode_itl_s"])
            print(f"chunked={chunked!s:5} budget {run['budget']:6d}: long-prompt TTFT {run['long_ttft_s'] * 1e3:8.1f} ms "
                  f"in {run['long_ttft_steps']} steps; decode ITL median {itl[len(itl) // 2] * 1e3:7.1f} ms, "
                  f"max {itl[-1] * 1e3:7.1f} ms", flush=True)
        for backend in backends[1:]:
            result["memory"][backend] = prefill_memory_sweep(model_dir, prompt_len, chunk_sizes, backend)
            write_json(result, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
