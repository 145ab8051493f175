"""Per-request sampling settings, named as in vLLM's ``SamplingParams``."""

from __future__ import annotations

from dataclasses import dataclass

from .checks import as_bool, as_float, as_int, show

# Temperatures below this are treated as greedy (vLLM's ``_SAMPLING_EPS``): dividing
# logits by ~1e-38 overflows to inf and softmax turns it into NaN.
SAMPLING_EPS = 1e-5
MAX_TOP_K = 2**31 - 1  # the largest k a sampler's int32 index tensor can hold
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token of one request, and when to stop.

    Checked once, here, and immutable afterwards (``dataclasses.replace`` makes a
    checked copy), so nothing invalid can reach the sampler mid-step.

    Args:
        temperature: softmax temperature, a finite float >= 0. ``0`` means greedy
            (argmax); so does any value below ``SAMPLING_EPS`` (1e-5).
        top_p: nucleus sampling: keep the smallest set of tokens whose probability
            mass reaches ``top_p`` (Holtzman et al., 2020). A float in (0, 1].
        top_k: keep only the ``top_k`` most likely tokens, an int in
            [1, 2**31 - 1]; ``-1`` (or 0) keeps all.
        max_tokens: maximum number of generated tokens, an int >= 1.
        ignore_eos: keep generating past the end-of-sequence token (benchmarks).
        stop_token_ids: extra token ids that end generation (the token is kept): a
            list or tuple of ints >= 0, stored as a tuple.
        seed: per-request random seed, None or an int in [0, 2**63 - 1]; the same
            seed gives the same tokens whatever else is in the batch.
        stop: strings that end generation when the text contains one (OpenAI's
            ``stop``); the stop string and anything after it are not returned. A
            non-empty str or a list or tuple of them, stored as a tuple.

    Integer fields accept numpy integers (converted to int); bools and floats are
    refused (``max_tokens=2.5`` is an error, not 3 tokens).

    Raises:
        TypeError: a field of the wrong type, naming the field and the type it needs.
        ValueError: a value outside its range (or NaN / inf), naming the field and the fix.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    ignore_eos: bool = False
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        temperature = as_float("temperature", self.temperature)
        if temperature < 0:
            raise ValueError(
                f"temperature={temperature} is negative; use 0 for greedy decoding "
                "or a positive value to sample."
            )
        top_p = as_float("top_p", self.top_p)
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p={top_p} is outside (0, 1]; use 1.0 to disable nucleus sampling.")
        top_k = as_int("top_k", self.top_k)
        if not -1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k={top_k} is invalid; use -1 (or 0) to keep all tokens, "
                             f"or a positive k up to {MAX_TOP_K}.")
        max_tokens = as_int("max_tokens", self.max_tokens)
        if max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens} must be at least 1.")
        if not isinstance(self.stop_token_ids, (list, tuple)):
            raise TypeError(f"stop_token_ids={show(self.stop_token_ids)} has type {type(self.stop_token_ids).__name__}; "
                            "pass a list of int token ids, e.g. stop_token_ids=[2].")
        stop_token_ids = tuple(as_int(f"stop_token_ids[{i}]", t) for i, t in enumerate(self.stop_token_ids))
        if any(t < 0 for t in stop_token_ids):
            raise ValueError(f"stop_token_ids={list(stop_token_ids)} holds a negative id; token ids are >= 0.")
        seed = None if self.seed is None else as_int("seed", self.seed)
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise ValueError(f"seed={seed} is outside [0, 2**63 - 1]; pass a smaller non-negative int, or None.")
        normalized = dict(temperature=temperature, top_p=top_p, top_k=top_k, max_tokens=max_tokens,
                          ignore_eos=as_bool("ignore_eos", self.ignore_eos), stop_token_ids=stop_token_ids, seed=seed,
                          stop=_stop_strings(self.stop))
        for name, value in normalized.items():
            object.__setattr__(self, name, value)  # the frozen dataclass's own way to set fields in __post_init__

    @property
    def greedy(self) -> bool:
        return self.temperature < SAMPLING_EPS


def _stop_strings(stop: object) -> tuple[str, ...]:
    """``stop`` as a tuple of non-empty strings (one str is a tuple of one)."""
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise TypeError(f"stop={show(stop)} has type {type(stop).__name__}; pass a str or a list of str, "
                        "e.g. stop=[\"\\n\\n\"].")
    if any(not s for s in stop):
        raise ValueError(f"stop={list(stop)} holds an empty string, which would match at once; drop it.")
    return tuple(stop)
