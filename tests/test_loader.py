"""Checkpoint loading: config forms, sharded weights, RoPE variants, tiny checkpoints."""

from __future__ import annotations

import json
import shutil

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.loader import decoder_spec, load_hf_config
from tutorial_engine.models.rotary import rope_inv_freq
from tutorial_engine.book.tiny import write_tiny_checkpoint

from reference import hf_greedy


def test_transformers4_rope_theta_form(tmp_path, tiny_checkpoints):
    folder = tmp_path / "old_form"
    shutil.copytree(tiny_checkpoints["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("rope_parameters", None)
    config["rope_theta"] = 123456.0
    (folder / "config.json").write_text(json.dumps(config))
    assert decoder_spec(load_hf_config(folder)).rope_theta == 123456.0


def test_stories260k_rope_parameters_form(stories260k):
    spec = decoder_spec(load_hf_config(stories260k))
    assert (spec.rope_theta, spec.num_heads, spec.num_kv_heads, spec.head_dim) == (10000.0, 8, 4, 8)
    assert spec.tie_word_embeddings and spec.architecture == "LlamaForCausalLM"


def test_llama3_rope_scaling_matches_transformers():
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    config = AutoConfig.for_model("llama", hidden_size=2048, num_attention_heads=32, head_dim=64,
                                  max_position_embeddings=131072,
                                  rope_parameters={"rope_theta": 500000.0, **scaling})
    theirs, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    torch.testing.assert_close(rope_inv_freq(64, 500000.0, scaling), theirs.float())


def test_sharded_checkpoint_loads_and_matches(tmp_path, tiny_checkpoints):
    source = tiny_checkpoints["qwen2"]
    folder = tmp_path / "sharded"
    shutil.copytree(source, folder)
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(tensors)
    weight_map = {}
    for i in range(3):
        shard = f"model-{i + 1:05d}-of-00003.safetensors"
        part = {n: tensors[n] for n in names[i::3]}
        save_file(part, folder / shard, metadata={"format": "pt"})
        weight_map.update({n: shard for n in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    llm = LLM(folder)
    ids = llm.tokenizer("sharded weights").input_ids
    out = llm.generate([ids], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True), use_tqdm=False)[0]
    assert out["token_ids"] == hf_greedy(source, ids, 6)


def test_tiny_checkpoint_is_deterministic(tmp_path):
    a = write_tiny_checkpoint(tmp_path / "a", "llama")
    b = write_tiny_checkpoint(tmp_path / "b", "llama")
    ta, tb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_dummy_load_format_needs_only_a_config(tmp_path, tiny_checkpoints):
    folder = tmp_path / "config_only"
    folder.mkdir()
    shutil.copy(tiny_checkpoints["qwen3"] / "config.json", folder)
    llm = LLM(folder, load_format="dummy")
    out = llm.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True), use_tqdm=False)
    assert len(out[0]["token_ids"]) == 3


def test_cli_generate_prints_text(tiny_checkpoints, capsys):
    from tutorial_engine.__main__ import main

    assert main(["generate", "--model", str(tiny_checkpoints["qwen3"]), "--prompt", "Hello", "--max-tokens", "3"]) == 0
    assert capsys.readouterr().out.startswith("Hello")
    assert main(["generate", "--model", str(tiny_checkpoints["qwen3"]), "--prompt", "Hi", "--top-p", "0"]) == 2
    assert "top_p=0.0" in capsys.readouterr().err
