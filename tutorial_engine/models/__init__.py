"""Model definitions and the registry of supported Hugging Face architectures."""

from .decoder import CausalLM, DecoderSpec

SUPPORTED_ARCHITECTURES = {
    # architecture name in config.json -> (q/k/v bias, per-head q/k RMSNorm)
    "LlamaForCausalLM": (False, False),
    "Qwen2ForCausalLM": (True, False),
    "Qwen3ForCausalLM": (False, True),
}

__all__ = ["CausalLM", "DecoderSpec", "SUPPORTED_ARCHITECTURES"]
