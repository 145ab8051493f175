"""The correctness truth: greedy decoding with transformers itself (float32, CPU)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


@lru_cache(maxsize=None)
def hf_model(path: Path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@torch.inference_mode()
def hf_greedy(path: Path, prompt_ids: list[int], max_new_tokens: int, eos_ids: set[int] = frozenset()) -> list[int]:
    """Greedy continuation with transformers' own KV cache, stopping after
    ``max_new_tokens`` or at the first id in ``eos_ids`` (which is kept)."""
    model = hf_model(Path(path))
    step = model(torch.tensor([prompt_ids]), use_cache=True)
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = int(step.logits[0, -1].argmax())
        out.append(token)
        if token in eos_ids:
            break
        step = model(torch.tensor([[token]]), past_key_values=step.past_key_values, use_cache=True)
    return out
