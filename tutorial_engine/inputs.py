"""What a request may look like, checked before the engine does any work.

A prompt is one of (the forms vLLM's ``generate`` takes):

- text, ``"Once upon a time"``, tokenized by the checkpoint's tokenizer;
- token ids: a list or tuple of ints (numpy / torch integer scalars too), or a 1-D
  integer numpy array or torch tensor;
- a dict, ``{"prompt": text}`` or ``{"prompt_token_ids": token_ids}``.

Anything else is refused with a TypeError or ValueError that names the value and
the fix: ``bytes`` are not token ids (decode them to text), ``True`` is not token 1,
``1.0`` is not a token id, and a 2-D array is not one prompt. Every request of a
batch is checked before any is queued, so a rejected call leaves the engine as it was.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from .checks import show
from .sampling_params import SamplingParams

Prompt = str | list[int] | tuple[int, ...] | np.ndarray | torch.Tensor | dict

PROMPT_FORMS = ("a prompt is a str, a list of int token ids, a 1-D integer numpy array or torch tensor, "
                "or a dict {'prompt': str} / {'prompt_token_ids': [int, ...]}")


def normalize_batch(
    prompts: Prompt | list[Prompt], sampling_params: SamplingParams | list[SamplingParams] | None
) -> tuple[list[Prompt], list[SamplingParams]]:
    """``generate``'s arguments as one prompt and one SamplingParams per request.

    One prompt (a str, a dict, an array or tensor, or a list whose first item is a
    number) becomes a batch of one; a list or tuple of prompts stays a batch (``[]``
    is an empty batch). ``sampling_params`` may be one for all, one per prompt, or
    None (the defaults).

    Raises:
        TypeError: ``sampling_params`` that are not SamplingParams.
        ValueError: a list of sampling_params whose length differs from the prompts'.
    """
    if isinstance(prompts, (list, tuple)) and not _is_token_list(prompts):
        prompts = list(prompts)
    else:
        prompts = [prompts]
    if sampling_params is None:
        sampling_params = SamplingParams()
    if isinstance(sampling_params, SamplingParams):
        return prompts, [sampling_params] * len(prompts)
    if not isinstance(sampling_params, (list, tuple)):
        raise TypeError(f"sampling_params={show(sampling_params)} has type {type(sampling_params).__name__}; "
                        "pass a SamplingParams, or a list with one per prompt.")
    if len(sampling_params) != len(prompts):
        raise ValueError(f"got {len(sampling_params)} sampling_params for {len(prompts)} prompts; "
                         "pass one, or one per prompt.")
    return prompts, list(sampling_params)


def _is_token_list(prompts: list | tuple) -> bool:
    """A list that is one prompt of token ids rather than a batch: its first item is
    a number (floats and bools too, so that the prompt check names them)."""
    first = prompts[0] if prompts else None
    return isinstance(first, (numbers.Number, np.bool_)) or (isinstance(first, torch.Tensor) and first.ndim == 0)


def prompt_token_ids(prompt: Prompt, tokenizer, vocab_size: int) -> list[int]:
    """The token ids of one prompt, as Python ints in ``[0, vocab_size)``.

    Args:
        prompt: any form listed in this module's docstring.
        tokenizer: the checkpoint's tokenizer, or None (then text is refused).
        vocab_size: the model's vocabulary size.

    Raises:
        TypeError: a prompt of a form not listed above, or a token id that is not an int.
        ValueError: an empty prompt, unknown dict keys, ids outside the vocabulary,
            text without a tokenizer or with lone surrogates, an array that is not 1-D.
    """
    if isinstance(prompt, dict):
        prompt = _unwrap_dict(prompt)
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("the prompt is empty; give at least one character or token.")
        if tokenizer is None:
            raise ValueError("this checkpoint has no tokenizer; pass prompts as lists of token ids.")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as err:  # a lone surrogate ("\ud800") is not text a tokenizer can encode
            raise ValueError(f"the prompt is not valid Unicode: it holds a lone surrogate at index {err.start}; "
                             "pass valid text (e.g. decode bytes with errors='replace').") from None
        token_ids = tokenizer(prompt).input_ids
    elif isinstance(prompt, (np.ndarray, torch.Tensor)):
        token_ids = _array_token_ids(prompt)
    elif isinstance(prompt, (list, tuple)):
        token_ids = [_token_id(t, i) for i, t in enumerate(prompt)]
    elif isinstance(prompt, (bytes, bytearray)):
        raise TypeError(f"prompt {show(prompt)} is bytes; decode it to str first, e.g. prompt.decode('utf-8').")
    else:
        raise TypeError(f"prompt {show(prompt)} has type {type(prompt).__name__}; {PROMPT_FORMS}.")
    if not token_ids:
        raise ValueError("the prompt is empty; give at least one token.")
    bad = [t for t in token_ids if not 0 <= t < vocab_size]
    if bad:
        raise ValueError(f"token ids {bad[:5]} are outside the vocabulary [0, {vocab_size}).")
    return token_ids


def _unwrap_dict(prompt: dict) -> str | list[int]:
    """The text or token ids inside a vLLM-style prompt dict."""
    if set(prompt) == {"prompt"}:
        if not isinstance(prompt["prompt"], str):
            raise TypeError(f"{{'prompt': {show(prompt['prompt'])}}} needs a str; for token ids use "
                            "{'prompt_token_ids': [...]}.")
        return prompt["prompt"]
    if set(prompt) == {"prompt_token_ids"}:
        ids = prompt["prompt_token_ids"]
        if not isinstance(ids, (list, tuple, np.ndarray, torch.Tensor)):
            raise TypeError(f"{{'prompt_token_ids': {show(ids)}}} needs a list of int token ids; "
                            "for text use {'prompt': str}.")
        return ids
    raise ValueError(f"prompt dict with keys {sorted(map(str, prompt))} is not supported; "
                     "use exactly one key: {'prompt': str} or {'prompt_token_ids': [int, ...]}.")


def _array_token_ids(array: np.ndarray | torch.Tensor) -> list[int]:
    if array.ndim != 1:
        raise ValueError(f"a prompt array has shape {tuple(array.shape)}; pass a 1-D array of token ids "
                         "(for a batch, a list of 1-D arrays).")
    integer = (np.issubdtype(array.dtype, np.integer) if isinstance(array, np.ndarray)
               else not (array.dtype.is_floating_point or array.dtype.is_complex or array.dtype == torch.bool))
    if not integer:
        raise TypeError(f"a prompt array has dtype {array.dtype}; token ids must be integers "
                        "(convert with .astype(np.int64) or .long()).")
    return array.tolist()


def _token_id(value: object, position: int) -> int:
    """One token id as a Python int; bools, floats and anything else raise TypeError."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not (
            value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool):
        return int(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    hint = " (True is not token 1)" if isinstance(value, (bool, np.bool_)) else ""
    raise TypeError(f"token id {show(value)} at position {position} has type {type(value).__name__}{hint}; "
                    f"token ids must be ints ({PROMPT_FORMS}; for a batch, a list of prompts).")


def check_request(token_ids: list[int], params: SamplingParams, max_model_len: int,
                  num_kvcache_blocks: int, block_size: int) -> None:
    """Refuse a request the engine could never finish.

    Raises:
        TypeError: ``params`` is not a SamplingParams.
        ValueError: the prompt is longer than ``max_model_len``, or prompt plus
            ``max_tokens`` (capped at ``max_model_len``) exceeds the whole KV cache.
    """
    if not isinstance(params, SamplingParams):
        raise TypeError(f"sampling_params={show(params)} has type {type(params).__name__}; pass a SamplingParams.")
    if len(token_ids) > max_model_len:
        raise ValueError(f"the prompt has {len(token_ids)} tokens, more than max_model_len={max_model_len}; "
                         "shorten it or raise max_model_len.")
    longest = min(len(token_ids) + params.max_tokens, max_model_len)
    capacity = num_kvcache_blocks * block_size
    if longest > capacity:
        raise ValueError(
            f"a request of up to {longest} tokens cannot fit the KV cache of {num_kvcache_blocks} blocks "
            f"({capacity} tokens); raise num_kvcache_blocks (or gpu_memory_utilization) or lower max_tokens."
        )
