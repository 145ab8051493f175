"""A checkpoint that does not match its config is refused, naming the file and the tensor.

Each test copies a tiny checkpoint into a temporary folder, breaks one thing, and
loads it."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tutorial_engine import LLM, SamplingParams
from tutorial_engine.loader import decoder_spec, expected_tensor_shapes, load_hf_config
from tutorial_engine.models import CausalLM

from reference import hf_greedy

LAYER0 = "model.layers.0."


def broken(tmp_path: Path, source: Path, tensors=None, config=None) -> Path:
    """A copy of ``source`` whose tensors / config dict were changed in place by the callables."""
    folder = tmp_path / "broken"
    shutil.copytree(source, folder)
    if tensors is not None:
        weights = load_file(folder / "model.safetensors")
        tensors(weights)
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    if config is not None:
        data = json.loads((folder / "config.json").read_text())
        config(data)
        (folder / "config.json").write_text(json.dumps(data))
    return folder


def load(folder: Path) -> LLM:
    return LLM(folder, num_kvcache_blocks=8)


@pytest.mark.parametrize("name", ["self_attn.k_proj.weight", "mlp.up_proj.weight", "self_attn.v_proj.bias"])
def test_missing_part_of_a_fused_projection(tmp_path, tiny_checkpoints, name):
    folder = broken(tmp_path, tiny_checkpoints["qwen2"], tensors=lambda w: w.pop(LAYER0 + name))
    with pytest.raises(ValueError, match=rf"lacks tensors \['{LAYER0 + name}'\]"):
        load(folder)


def test_oversized_tensor_is_not_truncated(tmp_path, tiny_checkpoints):
    def grow(w):
        w[LAYER0 + "self_attn.q_proj.weight"] = torch.cat([w[LAYER0 + "self_attn.q_proj.weight"]] * 2)
    folder = broken(tmp_path, tiny_checkpoints["qwen3"], tensors=grow)
    with pytest.raises(ValueError, match=r"model.safetensors: tensor 'model.layers.0.self_attn.q_proj.weight' has "
                                         r"shape \(128, 64\), but config.json implies \(64, 64\) "
                                         r"= \(num_attention_heads \* head_dim, hidden_size\)"):
        load(folder)


def test_embedding_with_too_few_rows(tmp_path, tiny_checkpoints):
    folder = broken(tmp_path, tiny_checkpoints["qwen3"],
                    tensors=lambda w: w.update({"model.embed_tokens.weight": w["model.embed_tokens.weight"][:-10]}))
    with pytest.raises(ValueError, match=r"'model.embed_tokens.weight' has shape \(\d+, 64\).*\(vocab_size, hidden_size\)"):
        load(folder)


def test_config_vocab_size_disagrees_with_embedding(tmp_path, tiny_checkpoints):
    folder = broken(tmp_path, tiny_checkpoints["llama"], config=lambda c: c.update(vocab_size=c["vocab_size"] + 8))
    with pytest.raises(ValueError, match=r"'(model.embed_tokens|lm_head).weight' has shape \(512, 64\).*\(520, 64\) = \(vocab_size"):
        load(folder)


def test_config_kv_heads_disagree_with_weights(tmp_path, tiny_checkpoints):
    folder = broken(tmp_path, tiny_checkpoints["qwen3"], config=lambda c: c.update(num_key_value_heads=1))
    with pytest.raises(ValueError, match=r"self_attn.k_proj.weight' has shape \(32, 64\), but config.json implies "
                                         r"\(16, 64\) = \(num_key_value_heads \* head_dim"):
        load(folder)


def test_heads_not_a_multiple_of_kv_heads(tmp_path, tiny_checkpoints):
    folder = broken(tmp_path, tiny_checkpoints["qwen3"], config=lambda c: c.update(num_key_value_heads=3))
    with pytest.raises(ValueError, match="config.json: num_attention_heads=4 is not a multiple of num_key_value_heads=3"):
        load(folder)


def test_unknown_tensor(tmp_path, tiny_checkpoints):
    folder = broken(tmp_path, tiny_checkpoints["qwen3"], tensors=lambda w: w.update({"model.mystery.weight": torch.ones(3)}))
    with pytest.raises(ValueError, match="model.safetensors: tensor 'model.mystery.weight' is not part of a "
                                         "Qwen3ForCausalLM"):
        load(folder)


def test_untied_config_without_lm_head(tmp_path, tiny_checkpoints):
    folder = broken(tmp_path, tiny_checkpoints["llama"], tensors=lambda w: w.pop("lm_head.weight"))
    with pytest.raises(ValueError, match=r"lacks tensors \['lm_head.weight'\] \(set tie_word_embeddings"):
        load(folder)


def test_integer_tensor(tmp_path, tiny_checkpoints):
    folder = broken(tmp_path, tiny_checkpoints["qwen3"],
                    tensors=lambda w: w.update({"model.norm.weight": torch.ones(64, dtype=torch.int64)}))
    with pytest.raises(ValueError, match="'model.norm.weight' has dtype I64; only float checkpoints"):
        load(folder)


def test_stray_safetensors_file_is_ignored(tmp_path, tiny_checkpoints, caplog):
    source = tiny_checkpoints["qwen3"]
    folder = broken(tmp_path, source)
    save_file({"model.embed_tokens.weight": torch.zeros(512, 64)}, folder / "adapter.safetensors")
    with caplog.at_level(logging.WARNING, logger="tutorial_engine.loader"):
        llm = load(folder)
    assert "ignoring ['adapter.safetensors']" in caplog.text
    ids = llm.tokenizer("stray files").input_ids
    out = llm.generate(ids, SamplingParams(temperature=0, max_tokens=5, ignore_eos=True), use_tqdm=False)[0]
    assert out["token_ids"] == hf_greedy(source, ids, 5)


def test_only_a_differently_named_weights_file(tmp_path, tiny_checkpoints):
    folder = broken(tmp_path, tiny_checkpoints["qwen3"])
    (folder / "model.safetensors").rename(folder / "weights.safetensors")
    with pytest.raises(FileNotFoundError, match=r"found only \['weights.safetensors'\], rename"):
        load(folder)


@pytest.mark.parametrize("keep", [0.5, 0.99, 0.001], ids=["half", "last-bytes", "in-header"])
def test_truncated_safetensors(tmp_path, tiny_checkpoints, keep):
    folder = broken(tmp_path, tiny_checkpoints["qwen3"])
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match=r"broken/model.safetensors is not a readable safetensors file"):
        load(folder)


def test_invalid_config_json(tmp_path, tiny_checkpoints):
    folder = broken(tmp_path, tiny_checkpoints["qwen3"])
    (folder / "config.json").write_text('{"architectures": ["Qwen3ForCausalLM"],')
    with pytest.raises(ValueError, match=r"broken/config.json is not valid JSON \(.*line 1"):
        load(folder)
    (folder / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="broken/config.json holds a JSON list, not an object"):
        load(folder)


def test_invalid_generation_config_json(tmp_path, tiny_checkpoints):
    folder = broken(tmp_path, tiny_checkpoints["qwen3"])
    (folder / "generation_config.json").write_text("{oops")
    with pytest.raises(ValueError, match="broken/generation_config.json is not valid JSON"):
        load(folder)


def sharded(tmp_path: Path, source: Path) -> tuple[Path, dict[str, str]]:
    """``source`` split into two shards with an index; returns the folder and its weight map."""
    folder = broken(tmp_path, source)
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    weight_map = {}
    for i, names in enumerate([sorted(tensors)[::2], sorted(tensors)[1::2]]):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in names}, folder / shard, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(names, shard)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder, weight_map


def test_index_is_the_file_set(tmp_path, tiny_checkpoints):
    folder, weight_map = sharded(tmp_path, tiny_checkpoints["qwen3"])
    # a stale single-file copy beside the shards is ignored, not loaded over them
    save_file({"model.norm.weight": torch.zeros(64)}, folder / "model.safetensors")
    load(folder)
    # an index entry pointing at a shard that lacks the tensor
    name = "model.norm.weight"
    other = next(s for s in set(weight_map.values()) if s != weight_map[name])
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map | {name: other}}))
    with pytest.raises(ValueError, match=f"{other} lacks tensor 'model.norm.weight', which "
                                         "model.safetensors.index.json places there"):
        load(folder)
    (folder / "model.safetensors.index.json").write_text("{")
    with pytest.raises(ValueError, match="model.safetensors.index.json is not valid JSON"):
        load(folder)
    (folder / "model.safetensors.index.json").write_text("{}")
    with pytest.raises(ValueError, match="model.safetensors.index.json has no 'weight_map'"):
        load(folder)


@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen2"])
def test_expected_shapes_cover_every_parameter(tiny_checkpoints, arch):
    """The loader's table of tensors fills every parameter of the model, and nothing else."""
    spec = decoder_spec(load_hf_config(tiny_checkpoints[arch]))
    model = CausalLM(spec)
    covered = set()
    for name in expected_tensor_shapes(spec):
        packed = next((k for k in CausalLM.packed_modules if f".{k}." in name), None)
        covered.add(name.replace(packed, CausalLM.packed_modules[packed][0]) if packed else name)
    params = dict(model.named_parameters())  # a tied lm_head.weight is the embedding, listed once
    assert covered == set(params)
