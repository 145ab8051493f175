"""Load a Hugging Face checkpoint folder: config, weights and tokenizer.

Config comes through ``transformers.AutoConfig`` (so both the transformers-4
``rope_theta`` and the transformers-5 ``rope_parameters`` spellings work), weights
through ``safetensors``, the tokenizer through ``AutoTokenizer``.

Loading is strict, because a checkpoint that does not match its config otherwise
loads "fine" and generates wrong tokens: every tensor the model needs must be
present with exactly the shape config.json implies (each part of a fused
projection on its own), and no unknown tensor may be present. All of it is checked
from the safetensors headers before any weight is copied. Errors are ValueError or
FileNotFoundError and name the file (and the tensor).

The files of a checkpoint are those that ``model.safetensors.index.json`` lists or,
without an index, ``model.safetensors``. Other ``*.safetensors`` files in the folder
(a stray copy, an adapter) are ignored, with a warning in the log.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from .models import SUPPORTED_ARCHITECTURES, CausalLM, DecoderSpec
from .models.layers import default_weight_loader

logger = logging.getLogger(__name__)

INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")  # safetensors' names


def load_hf_config(path: str | Path) -> PretrainedConfig:
    """Read ``config.json``.

    Raises:
        FileNotFoundError: it is missing.
        ValueError: it is not valid JSON, or not a config transformers can read.
    """
    file = Path(path) / "config.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"{Path(path)} has no config.json; pass a Hugging Face checkpoint folder "
            "(config.json, *.safetensors, tokenizer files)."
        )
    read_json(file)
    try:
        return AutoConfig.from_pretrained(file.parent)
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f"{file} is not a config transformers can read: {err}") from err


def read_json(file: Path) -> dict:
    """The JSON object in ``file``. Raises ValueError naming the file when it is not one."""
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON ({err}); fix it or re-download the checkpoint.") from err
    if not isinstance(data, dict):
        raise ValueError(f"{file} holds a JSON {type(data).__name__}, not an object; re-download the checkpoint.")
    return data


def decoder_spec(config: PretrainedConfig) -> DecoderSpec:
    """The engine's view of a transformers config.

    Raises:
        ValueError: for an architecture outside ``SUPPORTED_ARCHITECTURES``, or query
            heads that are not a multiple of the KV heads.
    """
    architectures = getattr(config, "architectures", None) or []
    arch = next((a for a in architectures if a in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        raise ValueError(
            f"architecture {architectures or config.model_type!r} is not supported; "
            f"supported: {sorted(SUPPORTED_ARCHITECTURES)}."
        )
    qkv_bias, qk_norm = SUPPORTED_ARCHITECTURES[arch]
    num_kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    if config.num_attention_heads % num_kv_heads:  # grouped-query attention shares each KV head by a group
        source = Path(getattr(config, "_name_or_path", "") or ".") / "config.json"
        raise ValueError(f"{source}: num_attention_heads={config.num_attention_heads} is not a multiple of "
                         f"num_key_value_heads={num_kv_heads}; fix config.json.")
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
        num_kv_heads=num_kv_heads,
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


def expected_tensor_shapes(spec: DecoderSpec) -> dict[str, tuple[tuple[int, ...], str]]:
    """Every tensor a checkpoint of ``spec`` must hold: its full (unsharded) shape,
    and the config.json fields that shape comes from (for error messages)."""
    h, d, inter, vocab = spec.hidden_size, spec.head_dim, spec.intermediate_size, spec.vocab_size
    q, kv = spec.num_heads * d, spec.num_kv_heads * d
    q_from, kv_from = "num_attention_heads * head_dim", "num_key_value_heads * head_dim"
    shapes = {
        "model.embed_tokens.weight": ((vocab, h), "vocab_size, hidden_size"),
        "model.norm.weight": ((h,), "hidden_size"),
    }
    if not spec.tie_word_embeddings:  # tied: the output head reuses the embedding
        shapes["lm_head.weight"] = ((vocab, h), "vocab_size, hidden_size")
    for i in range(spec.num_layers):
        layer = {
            "input_layernorm.weight": ((h,), "hidden_size"),
            "post_attention_layernorm.weight": ((h,), "hidden_size"),
            "self_attn.q_proj.weight": ((q, h), f"{q_from}, hidden_size"),
            "self_attn.k_proj.weight": ((kv, h), f"{kv_from}, hidden_size"),
            "self_attn.v_proj.weight": ((kv, h), f"{kv_from}, hidden_size"),
            "self_attn.o_proj.weight": ((h, q), f"hidden_size, {q_from}"),
            "mlp.gate_proj.weight": ((inter, h), "intermediate_size, hidden_size"),
            "mlp.up_proj.weight": ((inter, h), "intermediate_size, hidden_size"),
            "mlp.down_proj.weight": ((h, inter), "hidden_size, intermediate_size"),
        }
        if spec.qkv_bias:
            layer |= {"self_attn.q_proj.bias": ((q,), q_from), "self_attn.k_proj.bias": ((kv,), kv_from),
                      "self_attn.v_proj.bias": ((kv,), kv_from)}
        if spec.qk_norm:
            layer |= {"self_attn.q_norm.weight": ((d,), "head_dim"), "self_attn.k_norm.weight": ((d,), "head_dim")}
        shapes |= {f"model.layers.{i}.{name}": shape for name, shape in layer.items()}
    return shapes


def tensor_files(path: str | Path) -> dict[str, Path]:
    """Which file holds each tensor of the checkpoint in folder ``path``: the
    ``weight_map`` of ``model.safetensors.index.json``, else every tensor of
    ``model.safetensors``. Other ``*.safetensors`` files are ignored (logged).

    Raises:
        FileNotFoundError: no weights, or shards the index lists are missing.
        ValueError: an index or weights file that cannot be read.
    """
    path = Path(path)
    index = path / INDEX_FILE
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no 'weight_map' of tensor names to files; re-download the checkpoint.")
        files = {name: path / shard for name, shard in weight_map.items()}
        missing = sorted({str(f) for f in files.values() if not f.is_file()})
        if missing:
            raise FileNotFoundError(f"shards listed in {index} are missing: {missing}; re-download the checkpoint.")
    elif (path / WEIGHTS_FILE).is_file():
        with open_safetensors(path / WEIGHTS_FILE) as f:
            files = dict.fromkeys(f.keys(), path / WEIGHTS_FILE)
    else:
        found = sorted(p.name for p in path.glob("*.safetensors"))
        raise FileNotFoundError(
            f"{path} has no *.safetensors weights ({WEIGHTS_FILE}, or shards listed in {INDEX_FILE})"
            + (f"; found only {found}, rename the checkpoint's file to {WEIGHTS_FILE}" if found else "")
            + "; download them, or pass load_format='dummy' for random weights (benchmarks)."
        )
    stray = sorted(p.name for p in set(path.glob("*.safetensors")) - set(files.values()))
    if stray:
        logger.warning("%s: ignoring %s, which the checkpoint does not list", path, stray)
    return files


def open_safetensors(file: Path):
    """``safe_open(file)``, with a ValueError naming the file if it is unreadable (e.g. truncated)."""
    try:
        return safe_open(file, framework="pt")
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{file} is not a readable safetensors file ({err}); re-download it.") from err


def load_weights(model: CausalLM, path: str | Path) -> None:
    """Copy checkpoint tensors into ``model``, splitting fused/sharded ones via each
    parameter's ``weight_loader``. Every tensor is checked (see the module docstring)
    before the first is copied. Loaders get safetensors slices, not tensors, so a
    tensor-parallel rank reads only the rows or columns of its own shard.

    Raises:
        FileNotFoundError: no weights, or missing shards.
        ValueError: a missing, unknown, misshapen or non-float tensor, or an unreadable
            file; the message names the file and the tensor.
    """
    expected = expected_tensor_shapes(model.spec)
    files = {name: file for name, file in tensor_files(path).items()
             if "rotary_emb.inv_freq" not in name and not (name == "lm_head.weight" and model.spec.tie_word_embeddings)}
    missing = sorted(expected.keys() - files.keys())
    if missing:
        hint = " (set tie_word_embeddings in config.json if the output head is the embedding)" \
            if missing == ["lm_head.weight"] else ""
        raise ValueError(f"checkpoint at {path} lacks tensors {missing[:5]}{' and more' if len(missing) > 5 else ''}"
                         f"{hint}; is it complete, and is config.json its own?")
    with ExitStack() as stack:
        handles = {file: stack.enter_context(open_safetensors(file)) for file in set(files.values())}
        names_in = {file: set(handle.keys()) for file, handle in handles.items()}
        for name, file in files.items():
            if name not in expected:
                raise ValueError(f"{file}: tensor {name!r} is not part of a {model.spec.architecture} with this "
                                 "config.json; is this the right architecture?")
            if name not in names_in[file]:
                raise ValueError(f"{file} lacks tensor {name!r}, which {INDEX_FILE} places there; re-download it.")
            header = handles[file].get_slice(name)
            (shape, source), found = expected[name], tuple(header.get_shape())
            if found != shape:
                raise ValueError(f"{file}: tensor {name!r} has shape {found}, but config.json implies {shape} "
                                 f"= ({source}); the weights and config.json disagree.")
            if header.get_dtype() not in FLOAT_DTYPES:
                raise ValueError(f"{file}: tensor {name!r} has dtype {header.get_dtype()}; only float checkpoints "
                                 f"({', '.join(FLOAT_DTYPES)}) are supported, not quantized ones.")
        params = dict(model.named_parameters())
        for name, file in files.items():  # a lazy slice: each rank reads only its shard
            _copy_into(model, params, name, handles[file].get_slice(name))


def _copy_into(model: CausalLM, params: dict[str, torch.nn.Parameter], name: str, tensor) -> None:
    """Hand a checkpoint tensor to its parameter's ``weight_loader`` (with the part id for fused ones)."""
    packed = next((k for k in model.packed_modules if f".{k}." in name), None)
    if packed is None:
        param = params[name]
        getattr(param, "weight_loader", default_weight_loader)(param, tensor)
    else:
        target, shard_id = model.packed_modules[packed]
        param = params[name.replace(packed, target)]
        param.weight_loader(param, tensor, shard_id)


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
        sources.append(read_json(Path(path) / "generation_config.json").get("eos_token_id"))
    for value in sources:
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    return ids
