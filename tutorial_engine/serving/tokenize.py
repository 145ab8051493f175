"""Request text to token ids without stalling the server.

Two costs are bounded here, before the engine sees a request:

- A text prompt that cannot fit the context is refused *before* tokenizing, when the
  tokenizer gives a certain bound: a tokenizer that covers every character of its
  input with tokens (byte-level BPE, or BPE with byte fallback, and no normalizer that
  could merge or drop characters) never makes one token of more characters than its
  longest vocabulary entry, so a text of more than ``max_model_len * that`` characters
  has more than ``max_model_len`` tokens. For other tokenizers there is no such bound
  and the prompt is tokenized (off the loop) before the length check.
- Tokenizing and rendering chat templates run in a worker thread (``anyio.to_thread``),
  not on the event loop, so ``/health`` and every other request keep being answered
  while a long prompt is encoded (Hugging Face's Rust tokenizers release the GIL).
"""

from __future__ import annotations

import json

from anyio import to_thread
from jinja2 import TemplateError

from ..inputs import prompt_token_ids
from .errors import APIError

# Normalizers that never shrink a text: Metaspace's " " -> "▁" replacement and prefix
# (NFC, as in Qwen's tokenizers, composes several characters into one: no bound).
_SAFE_NORMALIZERS = {"Replace", "Prepend"}
# Pre-tokenizers that split the text without dropping any of it (a Split may remove its
# matches: behavior "Removed").
_KEEPING_PRE_TOKENIZERS = {"ByteLevel", "Metaspace", "Split", "Digits", "Punctuation"}


def max_chars_per_token(tokenizer) -> int | None:
    """The most characters of input text one token can stand for, when that is certain
    (see the module's docstring); None when it is not (then no pre-check is made)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    spec = json.loads(backend.to_str())
    normalizer = spec.get("normalizer")
    steps = (normalizer.get("normalizers", [normalizer]) if normalizer else [])
    if any(step.get("type") not in _SAFE_NORMALIZERS for step in steps):
        return None
    model, pre = spec.get("model", {}), spec.get("pre_tokenizer") or {}
    pre_steps = pre.get("pretokenizers", [pre]) if pre else []
    if any(step.get("type") not in _KEEPING_PRE_TOKENIZERS or step.get("behavior") == "Removed"
           for step in pre_steps):
        return None  # e.g. Whitespace, which drops the spaces
    covers_all = model.get("byte_fallback") or any(step.get("type") == "ByteLevel" for step in pre_steps)
    if model.get("type") != "BPE" or not covers_all:
        return None
    # A byte-level entry's characters are bytes; one input character is at least one byte.
    return max(len(piece) for piece in tokenizer.get_vocab())


def check_not_too_long(text: str, bound: int | None, max_model_len: int, param: str) -> None:
    """Raises APIError(400) when ``text`` certainly has more than ``max_model_len`` tokens;
    ``bound``: :func:`max_chars_per_token` of the tokenizer."""
    if bound is not None and len(text) > max_model_len * bound:
        raise APIError(400, f"the {param} has {len(text)} characters, so more than max_model_len={max_model_len} "
                       f"tokens (this tokenizer's tokens hold at most {bound} characters); shorten it.", param,
                       code="context_length_exceeded")


def _check_unicode(text: str, param: str) -> None:
    """JSON may carry lone surrogates (``"\ud800"``), which are not text a tokenizer can encode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise APIError(400, f"{param} is not valid Unicode (it holds a lone surrogate at index {err.start}); "
                       "send valid UTF-8 text.", param) from err


async def encode_prompt(prompt: str | list[int], tokenizer, vocab_size: int, max_model_len: int,
                        bound: int | None) -> list[int]:
    """The prompt's token ids (tokenized in a worker thread); ``bound``: see
    :func:`check_not_too_long`. Raises APIError(400)."""
    if isinstance(prompt, str):
        check_not_too_long(prompt, bound, max_model_len, "prompt")
    elif len(prompt) > max_model_len:  # token ids: refused before the list is checked id by id
        raise APIError(400, f"the prompt has {len(prompt)} tokens, more than max_model_len={max_model_len}; "
                       "shorten it.", "prompt", code="context_length_exceeded")
    try:
        return await to_thread.run_sync(prompt_token_ids, prompt, tokenizer, vocab_size)
    except (TypeError, ValueError) as err:
        raise APIError(400, str(err), "prompt") from err


async def encode_chat(messages: list[dict], tokenizer, model_name: str) -> list[int]:
    """The conversation as prompt token ids, through the tokenizer's chat template
    (which adds the special tokens itself, so none are added here), rendered and
    tokenized in a worker thread. Raises APIError(400)."""
    for i, message in enumerate(messages):  # (a prompt's are refused by the request's validation)
        _check_unicode(message["content"], f"messages[{i}].content")
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise APIError(400, f"model {model_name!r} has no chat template (its tokenizer_config.json has no "
                       "'chat_template'), so it cannot take chat messages; use /v1/completions, or serve a "
                       "checkpoint whose tokenizer has one (e.g. an instruct model such as Qwen3-0.6B) or add "
                       "a template with --chat-template FILE.", "messages")

    def render() -> list[int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False).input_ids

    try:
        return await to_thread.run_sync(render)
    except TemplateError as err:  # e.g. a template that requires alternating roles
        raise APIError(400, f"the chat template refused the messages: {err}", "messages") from err
