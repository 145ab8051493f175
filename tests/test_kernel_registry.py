"""The rule that only GPU-verified device kernels run by default, and the paths for older GPUs.

No GPU here: a CUDA device is named (selection never touches it) and the capability
queries are mocked.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from tutorial_engine.attention import auto_attention_backend
from tutorial_engine.config import EngineConfig, resolve_dtype
from tutorial_engine.loader import decoder_spec, load_hf_config
from tutorial_engine.model_runner import ModelRunner
from tutorial_engine.models import kernel_registry
from tutorial_engine.models.kernel_registry import (
    DEVICE_KERNELS, FUSED_KERNELS, PACKAGE, fingerprint, load_verified, select_fused_kernels, unverified_reason,
)
from tutorial_engine.models.layers import RMSNorm, SiluAndMul
from tutorial_engine.models.rotary import RotaryEmbedding
from tutorial_engine.models.decoder import Attention

CUDA = torch.device("cuda")


@pytest.fixture
def record(tmp_path, monkeypatch):
    """Point the registry at a record this test writes; forget the cached selection."""
    path = tmp_path / "verified_kernels.json"
    monkeypatch.setattr(kernel_registry, "VERIFIED_RECORD", path)
    kernel_registry._verified_now.cache_clear()
    yield path
    kernel_registry._verified_now.cache_clear()


def entry(kernel, print_=None):
    return {"card": "NVIDIA H100 80GB HBM3", "commit": "0" * 40, "date": "2026-12-05",
            "fingerprint": print_ or fingerprint(kernel)}


def test_default_runs_only_kernels_verified_as_their_source_stands(record, caplog):
    record.write_text(json.dumps({"rms_norm": entry("rms_norm"), "rotary": entry("rotary", "0123456789abcdef")}))
    with caplog.at_level(logging.INFO, logger=kernel_registry.__name__):
        assert select_fused_kernels("verified", CUDA) == {"rms_norm"}
    assert "rotary is off" in caplog.text and "source changed" in caplog.text
    assert "qk_norm_rope is off" in caplog.text and "has not passed the GPU tests" in caplog.text


def test_all_none_and_cpu(record):
    record.write_text("{}")
    assert select_fused_kernels("verified", CUDA) == frozenset()
    assert select_fused_kernels("all", CUDA) == set(FUSED_KERNELS)
    assert select_fused_kernels("none", CUDA) == frozenset()
    assert select_fused_kernels("all", torch.device("cpu")) == frozenset()


def test_editing_a_kernel_unverifies_it_alone():
    source = kernel_registry.FUSED_SOURCE.read_text()
    planted = source.replace("act = (gate / (1.0 + tl.exp(-gate)))", "act = (gate / (2.0 + tl.exp(-gate)))")
    assert planted != source
    assert fingerprint("silu_and_mul", {"models/fused.py": planted}) != fingerprint("silu_and_mul")
    assert fingerprint("rms_norm", {"models/fused.py": planted}) == fingerprint("rms_norm")
    shared = source.replace("pos = tl.load(positions_ptr + token)", "pos = tl.load(positions_ptr + token + 1)")
    shared = {"models/fused.py": shared}
    assert fingerprint("rotary", shared) != fingerprint("rotary")  # a shared helper counts for both users
    assert fingerprint("qk_norm_rope", shared) != fingerprint("qk_norm_rope")
    assert fingerprint("triton_attention", shared) == fingerprint("triton_attention")


def test_attention_kernels_count_their_tuning_constants_and_every_file():
    backend = (PACKAGE / "attention/triton_backend.py").read_text()
    tuned = backend.replace("DECODE_NUM_STAGES = 3", "DECODE_NUM_STAGES = 2")
    assert tuned != backend
    assert fingerprint("triton_attention", {"attention/triton_backend.py": tuned}) != fingerprint("triton_attention")
    store = (PACKAGE / "attention/triton_store.py").read_text()
    assert "tl.store(" in store
    planted = store.replace("tl.store(", "tl.store(  ", 1)  # layout alone: same tokens, different text
    assert fingerprint("triton_attention", {"attention/triton_store.py": planted}) != fingerprint("triton_attention")
    assert fingerprint("rms_norm", {"attention/triton_store.py": planted}) == fingerprint("rms_norm")


def test_auto_runs_triton_attention_only_once_verified(record, monkeypatch):
    monkeypatch.setattr("tutorial_engine.attention._installed", lambda package: package == "triton")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    record.write_text("{}")
    chosen, why = auto_attention_backend(CUDA, 16, torch.bfloat16)
    assert chosen == "torch" and "has not passed the GPU tests" in why and "attention_backend='triton'" in why
    record.write_text(json.dumps({"triton_attention": entry("triton_attention", "0123456789abcdef")}))
    chosen, why = auto_attention_backend(CUDA, 16, torch.bfloat16)
    assert chosen == "torch" and "source changed" in why
    record.write_text(json.dumps({"triton_attention": entry("triton_attention")}))
    assert auto_attention_backend(CUDA, 16, torch.bfloat16)[0] == "triton"
    assert select_fused_kernels("verified", CUDA) == frozenset()  # attention is not a fused kernel


def test_committed_record_names_known_kernels_and_default_selects_only_them():
    kernel_registry._verified_now.cache_clear()
    verified = load_verified()
    assert set(verified) <= set(DEVICE_KERNELS)
    selected = select_fused_kernels("verified", CUDA)
    assert selected == {k for k in FUSED_KERNELS if unverified_reason(k, verified) is None}
    assert all(verified[k].card.startswith("NVIDIA") and len(verified[k].commit) >= 40 for k in selected)


def test_engine_config_default_is_verified_and_validated(tiny_checkpoints):
    assert EngineConfig(str(tiny_checkpoints["qwen3"])).fused_kernels == "verified"
    with pytest.raises(ValueError, match="fused_kernels='fast' is unknown"):
        EngineConfig(str(tiny_checkpoints["qwen3"]), fused_kernels="fast")


def test_model_runner_switches_on_exactly_the_selected_kernels(tiny_checkpoints, monkeypatch):
    seen = []

    def select(mode, device):
        seen.append((mode, device))
        return frozenset({"rms_norm", "qk_norm_rope"})

    monkeypatch.setattr("tutorial_engine.model_runner.select_fused_kernels", select)
    config = EngineConfig(str(tiny_checkpoints["qwen3"]), load_format="dummy", fused_kernels="all",
                          num_kvcache_blocks=4)
    spec = decoder_spec(load_hf_config(config.model))
    runner = ModelRunner(config, spec, torch.device("cpu"), torch.float32, max_model_len=64)
    model = runner.model
    assert seen == [("all", torch.device("cpu"))] and runner.fused_kernels == {"rms_norm", "qk_norm_rope"}
    assert all(m.fused for m in model.modules() if isinstance(m, RMSNorm))
    assert not any(m.fused for m in model.modules() if isinstance(m, (SiluAndMul, RotaryEmbedding)))
    assert all(m.fused_qk_norm_rope for m in model.modules() if isinstance(m, Attention))
    assert any(isinstance(m, Attention) for m in model.modules())


@pytest.fixture
def old_card(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")


def test_bf16_on_a_card_before_ampere(old_card, caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_dtype("auto", torch.bfloat16, CUDA) == torch.float16
    assert "Tesla T4 (sm_75) has no bfloat16" in caplog.text
    with pytest.raises(ValueError, match="use dtype='float16' or 'auto'"):
        resolve_dtype("bfloat16", torch.bfloat16, CUDA)
    assert resolve_dtype("float16", torch.bfloat16, CUDA) == torch.float16


def test_bf16_kept_on_ampere_and_newer(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    assert resolve_dtype("auto", torch.bfloat16, CUDA) == torch.bfloat16
    assert resolve_dtype("bfloat16", None, CUDA) == torch.bfloat16


def test_auto_attention_backend_says_why(old_card, monkeypatch):
    installed = {"triton": True, "flash_attn": True}
    monkeypatch.setattr("tutorial_engine.attention._installed", lambda package: installed[package])
    assert auto_attention_backend(CUDA, 256, torch.float16) == (
        "triton", "FlashAttention-2 needs compute capability 8.0+ (Ampere or newer), not sm_75")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert auto_attention_backend(CUDA, 256, torch.bfloat16)[0] == "flash_attn"
    assert "multiple of 256" in auto_attention_backend(CUDA, 16, torch.bfloat16)[1]
    installed["flash_attn"] = False
    assert auto_attention_backend(CUDA, 256, torch.bfloat16) == (
        "triton", "flash-attn is not installed (pip install flash-attn --no-build-isolation)")
    assert auto_attention_backend(torch.device("cpu"), 16, torch.float32)[0] == "torch"
