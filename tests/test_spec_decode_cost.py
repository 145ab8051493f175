"""The GPU experiment's verify pass is what the engine would run: k + 1 new tokens per
sequence at the right positions and slots, every one of them sampled (checked on a CPU
runner; the timing itself needs a GPU)."""

from __future__ import annotations

import numpy as np
import torch

from tutorial_engine import LLM
from tutorial_engine.experiments.spec_decode_cost import verify_plan


def test_verify_plan_scores_every_new_token(tiny_checkpoints):
    batch, context, k, block = 3, 20, 4, 8
    plan = verify_plan(batch, context, k + 1, block)
    assert plan.num_tokens == batch * (k + 1) and list(plan.seq_lens) == [context + k + 1] * batch
    assert list(plan.positions[: k + 1]) == list(range(context, context + k + 1))
    assert list(plan.logits_indices) == list(range(batch * (k + 1)))
    assert len(set(plan.slot_mapping.tolist())) == plan.num_tokens  # no two tokens share a slot
    decode = verify_plan(batch, context, 1, block)
    assert decode.is_decode_only and list(decode.logits_indices) == [0, 1, 2]
    with LLM(str(tiny_checkpoints["qwen3"]), num_kvcache_blocks=batch * 4, kvcache_block_size=block) as llm:
        sampled = llm.engine.executor.runner.launch(plan)
    assert sampled.shape == (batch * (k + 1),) and sampled.dtype == torch.int64
    assert np.all(sampled.numpy() >= 0)
