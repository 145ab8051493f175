"""Architectures the benchmark runs without downloading a checkpoint.

Speed does not depend on weight values, so a ``config.json`` with the real model's
shapes plus ``load_format="dummy"`` (seeded random weights) measures the same work
as the real checkpoint. ``--model PATH`` runs a real checkpoint instead.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

# Qwen/Qwen3-0.6B's config.json (values from the published checkpoint).
QWEN3_0_6B_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "max_position_embeddings": 40960,
    "max_window_layers": 28,
    "model_type": "qwen3",
    "num_attention_heads": 16,
    "num_hidden_layers": 28,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000,
    "sliding_window": None,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "use_cache": True,
    "use_sliding_window": False,
    "vocab_size": 151936,
}

ARCHITECTURES = {"qwen3-0.6b": QWEN3_0_6B_CONFIG}


def architecture_folder(name: str, root: str | Path | None = None) -> Path:
    """A folder holding only ``config.json`` of architecture ``name`` (load it with
    ``load_format="dummy"``). Written under ``root`` or a fresh temporary folder.

    Raises:
        ValueError: for an unknown architecture name.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture {name!r} is unknown; choose one of {sorted(ARCHITECTURES)}, "
                         "or pass --model PATH of a checkpoint folder.")
    return write_config_folder(root if root is not None else tempfile.mkdtemp(prefix=f"{name}-"), ARCHITECTURES[name])


def write_config_folder(folder: str | Path, config: dict) -> Path:
    """A checkpoint folder holding only ``config.json``: enough for ``load_format="dummy"``
    (weights are random, prompts are token ids since there is no tokenizer)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
