"""Load a Hugging Face checkpoint folder: config, weights and tokenizer.

Config comes through ``transformers.AutoConfig`` (so both the transformers-4
``rope_theta`` and the transformers-5 ``rope_parameters`` spellings work), weights
through ``safetensors`` (one file, or shards listed in
``model.safetensors.index.json``), the tokenizer through ``AutoTokenizer``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PretrainedConfig, PreTrainedTokenizerBase

from .models import SUPPORTED_ARCHITECTURES, CausalLM, DecoderSpec
from .models.layers import default_weight_loader


def load_hf_config(path: str | Path) -> PretrainedConfig:
    """Read ``config.json``. Raises FileNotFoundError when it is missing."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json; pass a Hugging Face checkpoint folder "
            "(config.json, *.safetensors, tokenizer files)."
        )
    return AutoConfig.from_pretrained(path)


def decoder_spec(config: PretrainedConfig) -> DecoderSpec:
    """The engine's view of a transformers config.

    Raises:
        ValueError: for an architecture outside ``SUPPORTED_ARCHITECTURES``.
    """
    architectures = getattr(config, "architectures", None) or []
    arch = next((a for a in architectures if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        raise ValueError(
            f"architecture {architectures or config.model_type!r} is not supported; "
            f"supported: {sorted(SUPPORTED_ARCHITECTURES)}."
        )
    qkv_bias, qk_norm = SUPPORTED_ARCHITECTURES[arch]
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    rope_theta = rope.pop("rope_theta", None) or getattr(config, "rope_theta", 10000.0)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return DecoderSpec(
        architecture=arch,
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        head_dim=head_dim,
        rms_norm_eps=config.rms_norm_eps,
        rope_theta=float(rope_theta),
        rope_scaling=rope or None,
        max_position_embeddings=config.max_position_embeddings,
        qkv_bias=qkv_bias or bool(getattr(config, "attention_bias", False)),
        qk_norm=qk_norm,
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
    )


def checkpoint_dtype(config: PretrainedConfig) -> torch.dtype | None:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def safetensors_files(path: str | Path) -> list[Path]:
    """The weight files of a checkpoint, sharded or not. Raises FileNotFoundError if none."""
    path = Path(path)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [path / name for name in shards]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"shards listed in {index} are missing: {missing}; re-download the checkpoint.")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"{path} has no *.safetensors weights; download them, or pass load_format='dummy' "
            "for random weights (benchmarks)."
        )
    return files


def load_weights(model: CausalLM, path: str | Path) -> None:
    """Copy checkpoint tensors into ``model``, splitting fused/sharded ones via each
    parameter's ``weight_loader``. Raises ValueError on unknown or missing tensors."""
    params = dict(model.named_parameters())
    loaded: set[str] = set()
    for file in safetensors_files(path):
        with safe_open(file, framework="pt") as f:
            for name in f.keys():
                if "rotary_emb.inv_freq" in name or (name == "lm_head.weight" and model.spec.tie_word_embeddings):
                    continue
                tensor = f.get_tensor(name)
                packed = next((k for k in model.packed_modules if f".{k}." in name), None)
                if packed is not None:
                    target, shard_id = model.packed_modules[packed]
                    param_name = name.replace(packed, target)
                    _param(params, param_name).weight_loader(params[param_name], tensor, shard_id)
                else:
                    param = _param(params, name)
                    getattr(param, "weight_loader", default_weight_loader)(param, tensor)
                    param_name = name
                loaded.add(param_name)
    missing = set(params) - loaded - ({"lm_head.weight"} if model.spec.tie_word_embeddings else set())
    if missing:
        raise ValueError(f"checkpoint at {path} lacks tensors for {sorted(missing)[:5]}; is it complete?")


def _param(params: dict[str, torch.nn.Parameter], name: str) -> torch.nn.Parameter:
    if name not in params:
        raise ValueError(f"checkpoint tensor {name!r} has no matching parameter; is this the right architecture?")
    return params[name]


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase | None:
    """The checkpoint's tokenizer, or None when the folder has no tokenizer files
    (then only token-id prompts are accepted)."""
    path = Path(path)
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        return None
    return AutoTokenizer.from_pretrained(path)


def eos_token_ids(path: str | Path, config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase | None) -> set[int]:
    """End-of-sequence ids from config.json, generation_config.json and the tokenizer."""
    ids: set[int] = set()
    sources = [getattr(config, "eos_token_id", None), getattr(tokenizer, "eos_token_id", None)]
    if (Path(path) / "generation_config.json").is_file():
        sources.append(GenerationConfig.from_pretrained(path).eos_token_id)
    for value in sources:
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    return ids
