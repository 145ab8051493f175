"""The GPU experiment's verify pass is the engine's own verify step: k proposals after
each sequence's last token, at the right positions and slots, all k + 1 logits rows
verified (checked on a CPU runner; the timing itself needs a GPU)."""

from __future__ import annotations

from tutorial_engine import LLM
from tutorial_engine.experiments.spec_decode_cost import verify_plan


def test_verify_plan_is_the_engines_verify_step(tiny_checkpoints):
    batch, context, k, block = 3, 20, 4, 8
    plan = verify_plan(batch, context, k, block)
    assert plan.speculates and list(plan.num_draft_tokens) == [k] * batch
    assert plan.num_tokens == batch * (k + 1) and list(plan.seq_lens) == [context + k + 1] * batch
    assert list(plan.positions[: k + 1]) == list(range(context, context + k + 1))
    assert list(plan.logits_indices) == list(range(batch * (k + 1)))
    assert len(set(plan.slot_mapping.tolist())) == plan.num_tokens  # no two tokens share a slot
    decode = verify_plan(batch, context, 0, block)
    assert decode.is_decode_only and not decode.speculates and list(decode.logits_indices) == [0, 1, 2]
    with LLM(str(tiny_checkpoints["qwen3"]), num_kvcache_blocks=batch * 4, kvcache_block_size=block) as llm:
        emitted = llm.engine.executor.runner.execute(plan).token_ids()
    assert len(emitted) == batch and all(1 <= len(row) <= k + 1 for row in emitted)
