"""``speculative_config``: which proposer drafts tokens, and how many per step.

Takes vLLM's dictionary form (``LLM(model, speculative_config={...})``, or the JSON
that ``serve --speculative-config`` receives):

* ``{"method": "ngram", "num_speculative_tokens": k, "prompt_lookup_min": 1,
  "prompt_lookup_max": 4}``: prompt lookup over the request's own tokens;
* ``{"model": draft_path, "num_speculative_tokens": k}``: a small draft model that
  shares the target's tokenizer (``method`` "draft_model" is implied).

Every mistake is reported before any weight is loaded, naming the field and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from transformers import PretrainedConfig

from ..checks import as_int, show
from ..loader import decoder_spec, load_hf_config

SpecMethod = Literal["ngram", "draft_model"]
SPEC_METHODS: tuple[SpecMethod, ...] = ("ngram", "draft_model")
# Methods vLLM knows that need a trained head or tree attention this engine lacks.
NOT_BUILT_METHODS = ("eagle", "eagle3", "medusa", "mlp_speculator", "deepseek_mtp", "mtp", "suffix")
KNOWN_KEYS = ("method", "model", "num_speculative_tokens", "prompt_lookup_min", "prompt_lookup_max")
# vLLM falls back to 5 for both when neither is given and calls that value untuned; the
# book's prompts are short, so a lookup that may settle for one matching token proposes more often.
DEFAULT_PROMPT_LOOKUP_MIN = 1
DEFAULT_PROMPT_LOOKUP_MAX = 4


@dataclass(frozen=True)
class SpeculativeConfig:
    """A validated speculative-decoding setting (vLLM's ``SpeculativeConfig``).

    Attributes:
        method: "ngram" (prompt lookup) or "draft_model".
        num_speculative_tokens: ``k``, tokens proposed per sequence per step (>= 1);
            a verify step then scores ``k + 1`` positions per sequence.
        model: the draft checkpoint folder ("draft_model" only).
        prompt_lookup_min / prompt_lookup_max: the shortest and longest suffix n-gram
            prompt lookup tries to match ("ngram" only; 1 <= min <= max).

    Raises:
        TypeError: a field of the wrong type, naming it.
        ValueError: an out-of-range value or a field that does not apply to the method.
        FileNotFoundError: ``model`` is not a folder.
    """

    method: SpecMethod
    num_speculative_tokens: int
    model: str | None = None
    prompt_lookup_min: int | None = None
    prompt_lookup_max: int | None = None

    def __post_init__(self) -> None:
        k = as_int("num_speculative_tokens", self.num_speculative_tokens)
        if k < 1:
            raise ValueError(f"num_speculative_tokens={k} must be >= 1 (the tokens proposed per step); "
                             "leave speculative_config out to decode one token at a time.")
        object.__setattr__(self, "num_speculative_tokens", k)
        if self.method == "ngram":
            self._check_ngram()
        elif self.method == "draft_model":
            self._check_draft_model()
        else:
            raise ValueError(f"method={show(self.method)} is unknown; choose one of {SPEC_METHODS}.")

    def _check_ngram(self) -> None:
        if self.model is not None:
            raise ValueError(f"model={show(self.model)} does not apply to method='ngram' (prompt lookup needs no "
                             "model); drop 'model', or drop 'method' to use it as a draft model.")
        given = {name: as_int(name, getattr(self, name)) for name in ("prompt_lookup_min", "prompt_lookup_max")
                 if getattr(self, name) is not None}
        if not given:
            low, high = DEFAULT_PROMPT_LOOKUP_MIN, DEFAULT_PROMPT_LOOKUP_MAX
        else:  # vLLM's rule: a bound given alone stands for both
            low = given.get("prompt_lookup_min", given.get("prompt_lookup_max"))
            high = given.get("prompt_lookup_max", low)
        if low < 1:
            raise ValueError(f"prompt_lookup_min={low} must be >= 1 (the shortest n-gram to match).")
        if low > high:
            raise ValueError(f"prompt_lookup_min={low} > prompt_lookup_max={high}; "
                             "the shortest n-gram to match cannot exceed the longest: swap them.")
        object.__setattr__(self, "prompt_lookup_min", low)
        object.__setattr__(self, "prompt_lookup_max", high)

    def _check_draft_model(self) -> None:
        for name in ("prompt_lookup_min", "prompt_lookup_max"):
            if getattr(self, name) is not None:
                raise ValueError(f"{name} applies to method='ngram' only; drop it for a draft model.")
        if self.model is None:
            raise ValueError("method='draft_model' needs 'model', the draft checkpoint folder "
                             "(a smaller model with the target's tokenizer).")
        if not isinstance(self.model, (str, os.PathLike)):
            raise TypeError(f"model={show(self.model)} has type {type(self.model).__name__}; "
                            "pass the draft checkpoint folder as a str or pathlib.Path.")
        if not Path(self.model).is_dir():
            raise FileNotFoundError(f"speculative_config model={str(self.model)!r} is not a folder; pass the path "
                                    "of a draft checkpoint (config.json + *.safetensors) sharing the target's "
                                    "tokenizer.")
        object.__setattr__(self, "model", str(self.model))

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> SpeculativeConfig:
        """Parse vLLM's dictionary form; ``method`` defaults to "draft_model" when a
        ``model`` is given.

        Raises:
            TypeError: ``config`` is not a dict, or a field has the wrong type.
            ValueError: unknown keys, a missing ``num_speculative_tokens`` or method,
                or a method this engine does not build.
            FileNotFoundError: the draft folder does not exist.
        """
        if not isinstance(config, dict):
            raise TypeError(f"speculative_config={show(config)} has type {type(config).__name__}; pass a dict such "
                            "as {'method': 'ngram', 'num_speculative_tokens': 4}.")
        unknown = sorted(set(config) - set(KNOWN_KEYS), key=str)
        if unknown:
            raise ValueError(f"speculative_config has unknown key(s) {unknown}; the keys are {KNOWN_KEYS}.")
        if "num_speculative_tokens" not in config:
            raise ValueError("speculative_config needs 'num_speculative_tokens', the tokens proposed per step "
                             "(e.g. 4).")
        method = config.get("method", "draft_model" if config.get("model") is not None else None)
        if method is None:
            raise ValueError("speculative_config needs 'method' ('ngram') or 'model' (a draft checkpoint folder).")
        if method in NOT_BUILT_METHODS:
            raise ValueError(f"method={method!r} is not built in this engine; choose one of {SPEC_METHODS}.")
        return cls(method=method, num_speculative_tokens=config["num_speculative_tokens"],
                   model=config.get("model"), prompt_lookup_min=config.get("prompt_lookup_min"),
                   prompt_lookup_max=config.get("prompt_lookup_max"))

    def check_draft(self, target_hf_config: PretrainedConfig) -> None:
        """For a draft model: read its ``config.json`` and check that the engine can run
        it and that it can draft for the target (:func:`check_draft_compatible`).
        Nothing to check for "ngram".

        Raises:
            FileNotFoundError / ValueError: as :func:`load_hf_config`,
                :func:`~tutorial_engine.loader.decoder_spec` (an unsupported
                architecture) and :func:`check_draft_compatible`.
        """
        if self.method == "draft_model":
            draft = load_hf_config(self.model)
            decoder_spec(draft)
            check_draft_compatible(draft, target_hf_config, self.model)


def parse_speculative_config(value: SpeculativeConfig | dict | str | None) -> SpeculativeConfig | None:
    """``speculative_config`` as ``LLM`` and ``serve --speculative-config`` receive it:
    None (off), a dict, its JSON text, or an already-built config.

    Raises:
        ValueError: JSON that does not parse, or as :meth:`SpeculativeConfig.from_dict`.
    """
    if value is None or isinstance(value, SpeculativeConfig):
        return value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"speculative_config={show(value)} is not valid JSON ({err}); pass e.g. "
                             '\'{"method": "ngram", "num_speculative_tokens": 4}\'.') from err
    return SpeculativeConfig.from_dict(value)


def check_draft_compatible(draft: PretrainedConfig, target: PretrainedConfig, draft_path: str = "the draft") -> None:
    """A draft proposes token ids the target scores, so both must index one vocabulary
    (Leviathan et al., 2023, §2: the draft approximates the target's next-token
    distribution over the same tokens).

    Raises:
        ValueError: the vocabulary sizes differ, naming both.
    """
    draft_vocab, target_vocab = getattr(draft, "vocab_size", None), getattr(target, "vocab_size", None)
    if draft_vocab != target_vocab:
        raise ValueError(f"draft model {draft_path} has vocab_size={draft_vocab} but the target has "
                         f"vocab_size={target_vocab}; a draft must share the target's tokenizer (train or pick "
                         "a smaller model of the same family).")
