"""Bad input raises a clear error before any work starts, and loses nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tutorial_engine import LLM, EngineConfig, SamplingParams


@pytest.fixture(scope="module")
def llm(tiny_checkpoints):
    return LLM(tiny_checkpoints["qwen3"], max_model_len=64, num_kvcache_blocks=8, kvcache_block_size=4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_tokens=0), "max_tokens=0"),
        (dict(top_p=0.0), "top_p=0.0"),
        (dict(top_p=1.5), "top_p=1.5"),
        (dict(temperature=-0.1), "temperature=-0.1"),
        (dict(top_k=-2), "top_k=-2"),
    ],
)
def test_invalid_sampling_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_bad_prompts_fail_before_work_and_engine_survives(llm):
    ok = SamplingParams(temperature=0, max_tokens=4)
    with pytest.raises(ValueError, match="empty"):
        llm.generate(["fine prompt", ""], ok, use_tqdm=False)
    with pytest.raises(ValueError, match="max_model_len=64"):
        llm.generate([[1] * 65], ok, use_tqdm=False)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate([[1, 10**6]], ok, use_tqdm=False)
    with pytest.raises(ValueError, match="cannot fit the KV cache of 8 blocks"):
        llm.generate([[1] * 30], SamplingParams(max_tokens=10), use_tqdm=False)
    with pytest.raises(ValueError, match="2 sampling_params for 1 prompts"):
        llm.generate(["a"], [ok, ok], use_tqdm=False)
    # nothing was queued by the failed calls, and the engine still serves requests
    assert not llm.engine.has_unfinished()
    assert llm.get_metrics()["num_steps"] == 0
    assert len(llm.generate(["fine prompt"], ok, use_tqdm=False)[0]["token_ids"]) == 4


def test_missing_folder_config_and_weights(tmp_path, tiny_checkpoints):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        LLM(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        LLM(tmp_path)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_checkpoints["qwen3"], no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        LLM(no_weights)


def test_unsupported_architecture(tmp_path, tiny_checkpoints):
    folder = tmp_path / "gpt2ish"
    shutil.copytree(tiny_checkpoints["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["MysteryForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="MysteryForCausalLM.*not supported"):
        LLM(folder)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_kvcache_blocks=0), "num_kvcache_blocks=0"),
        (dict(max_num_seqs=0), "max_num_seqs=0"),
        (dict(gpu_memory_utilization=1.5), "gpu_memory_utilization=1.5"),
        (dict(attention_backend="cuda-magic"), "attention_backend='cuda-magic'"),
        (dict(prefix_caching="lru"), "prefix_caching='lru'"),
        (dict(max_model_len=100000), "max_position_embeddings=512"),
        (dict(enable_chunked_prefill=False, max_num_batched_tokens=100), "max_num_batched_tokens=100"),
        (dict(not_an_option=1), "unknown LLM options"),
    ],
)
def test_invalid_engine_config(tiny_checkpoints, kwargs, match):
    with pytest.raises(ValueError, match=match):
        LLM(tiny_checkpoints["qwen3"], **kwargs)


def test_text_prompt_without_tokenizer(tmp_path, tiny_checkpoints):
    folder = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_checkpoints["qwen3"], folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    llm = LLM(folder)
    with pytest.raises(ValueError, match="no tokenizer"):
        llm.generate("text", use_tqdm=False)
    assert len(llm.generate([1, 2, 3], SamplingParams(max_tokens=2), use_tqdm=False)[0]["token_ids"]) <= 2


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(enable_chunked_prefill="no"), TypeError, "enable_chunked_prefill='no' has type str; .* True or False"),
        (dict(enforce_eager=1), TypeError, "enforce_eager=1 has type int"),
        (dict(kvcache_block_size=16.0), TypeError, "kvcache_block_size=16.0 has type float; .* must be an int"),
        (dict(num_kvcache_blocks=8.5), TypeError, "num_kvcache_blocks=8.5 has type float"),
        (dict(max_model_len=True), TypeError, "max_model_len=True has type bool"),
        (dict(max_num_seqs="4"), TypeError, "max_num_seqs='4' has type str"),
        (dict(gpu_memory_utilization=float("nan")), ValueError, "gpu_memory_utilization=nan is not a finite number"),
        (dict(cpu_kvcache_space_gib=float("inf")), ValueError, "cpu_kvcache_space_gib=inf is not a finite number"),
        (dict(seed=-1), ValueError, "seed=-1 must be >= 0"),
        (dict(device="mps"), ValueError, "device='mps' is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        (dict(device="gpu0"), ValueError, "device='gpu0' is not supported"),
        (dict(device=0), ValueError, "device=0 is not supported"),
        (dict(device="cuda:99"), ValueError, "device='cuda:99' but this machine has"),
    ],
)
def test_engine_config_types_are_checked_before_loading(tiny_checkpoints, kwargs, error, match):
    with pytest.raises(error, match=match):
        EngineConfig(model=str(tiny_checkpoints["qwen3"]), **kwargs)  # the config itself refuses: nothing loaded


def test_engine_config_converts_numpy_ints(tiny_checkpoints):
    config = EngineConfig(model=str(tiny_checkpoints["qwen3"]), num_kvcache_blocks=np.int64(8), max_num_seqs=np.int32(4))
    assert (config.num_kvcache_blocks, config.max_num_seqs) == (8, 4) and type(config.num_kvcache_blocks) is int


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_names_the_fix(tiny_checkpoints):
    with pytest.raises(ValueError, match="device='cuda' but this machine has no usable CUDA GPU.*device='cpu'"):
        LLM(tiny_checkpoints["qwen3"], device="cuda")


def test_cpu_kv_sizing_names_the_cpu_setting(tiny_checkpoints):
    with pytest.raises(ValueError, match="raise cpu_kvcache_space_gib"):
        LLM(tiny_checkpoints["qwen3"], device="cpu", cpu_kvcache_space_gib=1e-9)
