"""nano-vLLM as a peer, on a CPU: the checkpoint the benchmark writes loads in this
engine and in transformers' tokenizer as nano-vLLM loads it, and the alternating
rounds run in the documented order and report the ratio of medians."""

from __future__ import annotations

from transformers import AutoTokenizer

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.bench import nanovllm
from tutorial_engine.bench.models import QWEN3_0_6B_CONFIG

TINY = {**QWEN3_0_6B_CONFIG, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 600,
        "bos_token_id": 598, "eos_token_id": 599}


def test_random_checkpoint_loads_in_this_engine_and_as_nanovllm_reads_it(tmp_path):
    folder = nanovllm.write_random_checkpoint(tmp_path / "ckpt", TINY)
    assert (folder / "model.safetensors").is_file()
    tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True)  # what nano-vLLM calls
    assert tokenizer.eos_token_id == 599 and tokenizer.encode("Benchmark: ")
    llm = LLM(str(folder))
    out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), use_tqdm=False)
    assert len(out[0]["token_ids"]) == 4


def test_rounds_alternate_after_a_cold_nanovllm_round(monkeypatch, tmp_path):
    calls = []
    ours_speeds, nano_speeds = iter([100.0, 130.0, 120.0]), iter([50.0, 90.0, 100.0, 80.0])

    def fake_nano(model, path, timeout):
        calls.append("nano")
        return {"output_tok_s": next(nano_speeds)}

    def fake_ours(model, flags, timeout):
        calls.append("ours")
        return {"engine": {"output_tok_s": next(ours_speeds)}}

    monkeypatch.setattr(nanovllm, "run_nanovllm", fake_nano)
    monkeypatch.setattr(nanovllm, "run_ours", fake_ours)
    saved = []
    result = nanovllm.compare(tmp_path, tmp_path, rounds=3, engine_flags=[], save=saved.append)
    assert calls == ["nano", "ours", "nano", "ours", "nano", "ours", "nano"]
    assert result["nanovllm_cold"]["output_tok_s"] == 50.0  # the cold round is not in the medians
    assert result["ours_summary"]["median"] == 120.0 and result["nanovllm_summary"]["median"] == 90.0
    assert result["ratio_of_medians"] == 120.0 / 90.0
    assert len(saved) == 3  # saved after every round, so a run cut short keeps its rounds
