"""Hugging Face transformers as the peer: the same requests, on the same GPU.

* ``hf_generate``: ``model.generate`` on one left-padded batch (static batching):
  every row runs until the longest request is done, so short requests waste steps.
* ``hf_generate_batch``: transformers' own continuous batching (its paged cache and
  scheduler, ``init_continuous_batching``), each request with its own
  ``max_new_tokens`` and EOS disabled, as ``generate_batch`` runs it.

Both sample with the workload's temperature (top-k and top-p off) and count
throughput as our engine does: requested output tokens over wall time, after a warm-up.
"""

from __future__ import annotations

import time

import torch

from .workloads import Requests

PEERS = ("hf_generate", "hf_generate_batch", "nanovllm")  # the --peers a benchmark can run beside ours


def load_hf_model(model_path: str, dummy: bool, device: torch.device, dtype: torch.dtype):
    """The transformers model: random weights from ``config.json`` when ``dummy``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if dummy:
        config = AutoConfig.from_pretrained(model_path)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation="sdpa").to(device)
    return model.eval()


def _generation_config(max_new_tokens: int, temperature: float, eos_token_id):
    from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature or None,
                            top_k=0, top_p=1.0, eos_token_id=eos_token_id, pad_token_id=0)


@torch.inference_mode()
def hf_generate(model, requests: Requests) -> dict:
    """Static batching: one padded batch generating ``max(max_tokens)`` tokens per row."""
    device = model.device
    n, width = len(requests.prompts), max(map(len, requests.prompts))
    input_ids = torch.zeros(n, width, dtype=torch.long)
    attention_mask = torch.zeros(n, width, dtype=torch.long)
    for i, prompt in enumerate(requests.prompts):  # left padding: every row ends at the same position
        input_ids[i, width - len(prompt):] = torch.tensor(prompt)
        attention_mask[i, width - len(prompt):] = 1
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    longest = max(requests.max_tokens)
    config = _generation_config(longest, requests.workload.temperature, None)
    model.generate(input_ids=input_ids[:2, -16:], attention_mask=attention_mask[:2, -16:],
                   generation_config=_generation_config(4, requests.workload.temperature, None))  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {
        "method": "transformers generate (static batching, left-padded)",
        "num_seqs": n,
        "time_s": elapsed,
        "output_tokens": requests.num_output_tokens,
        "output_tok_s": requests.num_output_tokens / elapsed,
        "generated_tokens_incl_padding_rows": int((out.shape[1] - width) * n),
    }


def hf_generate_batch(model, requests: Requests) -> dict:
    """transformers continuous batching with a per-request ``max_new_tokens``.

    Not under ``inference_mode``: the manager's background thread updates tensors
    created here in place, which inference tensors forbid (transformers uses no_grad)."""
    config = _generation_config(max(requests.max_tokens), requests.workload.temperature, -1)  # -1: no EOS
    manager = model.init_continuous_batching(generation_config=config)
    if hasattr(manager, "warmup"):
        manager.warmup()
    manager.start()
    try:
        _collect(manager, {manager.add_request(requests.prompts[0][:16], request_id="warmup", max_new_tokens=4)})
        start = time.perf_counter()
        ids = {manager.add_request(p, request_id=f"req{i}", max_new_tokens=n)
               for i, (p, n) in enumerate(zip(requests.prompts, requests.max_tokens))}
        results = _collect(manager, ids)
        elapsed = time.perf_counter() - start
    finally:
        manager.stop(block=True)
    generated = sum(len(r.generated_tokens) for r in results.values())
    return {
        "method": "transformers init_continuous_batching / generate_batch (per-request max_new_tokens, EOS off)",
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "num_seqs": len(requests.prompts),
        "time_s": elapsed,
        "output_tokens": requests.num_output_tokens,
        "generated_tokens": generated,
        "output_tok_s": requests.num_output_tokens / elapsed,
    }


def _finished(result) -> bool:
    is_finished = getattr(result, "is_finished", None)  # the method's name has moved between releases
    return is_finished() if callable(is_finished) else str(getattr(result, "status", "")).upper().endswith("FINISHED")


def _collect(manager, request_ids: set[str], timeout_s: float = 240) -> dict:
    results, deadline = {}, time.perf_counter() + timeout_s
    while len(results) < len(request_ids):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"transformers continuous batching returned {len(results)}/{len(request_ids)} requests")
        if hasattr(manager, "is_running") and not manager.is_running():
            raise RuntimeError("transformers' continuous-batching thread stopped (see its log above)")
        result = manager.get_result(timeout=1)
        if result is not None and result.request_id in request_ids and _finished(result):
            results[result.request_id] = result
    return results
