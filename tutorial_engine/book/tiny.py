"""Tiny random checkpoints in the real Hugging Face layout, built deterministically.

Tests and the book's CPU runs need a model without a download. These are genuine
checkpoints (``config.json`` + ``model.safetensors`` + a byte-level BPE tokenizer),
written by transformers itself, so the engine loads them exactly as it loads
Qwen3-0.6B. Weights are random (seeded), so the text is gibberish; the point is that
the engine's tokens match transformers' on the same weights.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

TINY_ARCHITECTURES = {
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(num_key_value_heads=1, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(num_key_value_heads=2, tie_word_embeddings=False)),
}

# A few paragraphs the tokenizer is trained on (written for this project).
CORPUS = """\
An inference engine turns a prompt into text one token at a time. The prompt is read
in a single pass called prefill; every later step, called decode, adds one token.
Keys and values of earlier tokens are kept in a cache, so each decode step reads the
cache instead of recomputing the whole prefix. The cache is cut into pages, and a
block table maps each sequence to its pages, much as an operating system maps
virtual memory to physical frames. Requests arrive at any time; a scheduler admits
them into the running batch and retires them when they finish, every step. When
memory runs out, the newest request is preempted and recomputed later. Prompts that
share a beginning can share cached pages: a radix tree finds the longest match.
Long prompts are split into chunks so that running requests keep their pace.
Once upon a time, a small model told a story about a cat, a dog and a red ball.
The quick brown fox jumps over the lazy dog. 0123456789 + - * / = ( ) [ ] { } , . ; :
"""

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]


def build_tokenizer(vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on :data:`CORPUS`; adds ``<s>`` (BOS) in front."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def write_tiny_checkpoint(path: str | Path, architecture: str = "qwen3", seed: int = 0, **overrides) -> Path:
    """Write a tiny random checkpoint of ``architecture`` (qwen3 | llama | qwen2) to ``path``.

    Default size: hidden 64, 2 layers, 4 query heads, head_dim 16, vocab 512, 512
    positions; ``overrides`` change any config field. The same arguments always give
    the same files. Raises ValueError for an unknown architecture.
    """
    if architecture not in TINY_ARCHITECTURES:
        raise ValueError(f"architecture={architecture!r} is unknown; choose one of {sorted(TINY_ARCHITECTURES)}")
    config_cls, model_cls, extra = TINY_ARCHITECTURES[architecture]
    tokenizer = build_tokenizer()
    fields = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, head_dim=16, max_position_embeddings=512, rms_norm_eps=1e-6,
        initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=0, rope_theta=10000.0,
        architectures=[model_cls], **extra,
    )
    fields.update(overrides)
    config = getattr(transformers, config_cls)(**fields)
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).to(torch.float32)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bars_on = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # keeps notebooks' stored outputs identical on reruns
    try:
        model.save_pretrained(path, safe_serialization=True)
    finally:
        if bars_on:
            transformers.utils.logging.enable_progress_bar()
    tokenizer.save_pretrained(path)
    return path


def tiny_model_path(architecture: str = "qwen3") -> Path:
    """The built-in tiny checkpoint, written once into a cache folder
    (``$TUTORIAL_ENGINE_CACHE`` or ``~/.cache/tutorial_engine``) and reused."""
    root = Path(os.environ.get("TUTORIAL_ENGINE_CACHE", Path.home() / ".cache" / "tutorial_engine"))
    target = root / f"tiny-{architecture}"
    if not (target / "config.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=root))
        write_tiny_checkpoint(staging, architecture)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target
