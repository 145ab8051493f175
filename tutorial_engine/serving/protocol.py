"""The request bodies of OpenAI's completions and chat completions APIs, as pydantic
models, and their translation into the engine's prompt and :class:`SamplingParams`.

Field names and defaults follow the OpenAI API reference
(https://platform.openai.com/docs/api-reference/completions/create and
.../chat/create). pydantic checks the JSON's *shape* (strict types: ``"0.5"`` is not a
number, ``true`` not an int; unknown fields are refused); the engine checks the
*values* (``SamplingParams``, ``inputs.py``), so each rule is written once. Like vLLM,
the bodies also take ``top_k``, ``ignore_eos`` and ``stop_token_ids``.

Fields of the API this engine does not implement are declared too, so that a request
using one gets a 400 naming it rather than a silently different answer.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..sampling_params import MAX_SEED, MAX_TOP_K, SamplingParams
from .errors import APIError, from_validation

SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "max_tokens", "ignore_eos", "stop_token_ids", "seed", "stop")

# Unsupported fields and the values that mean "not used" (those are accepted).
UNSUPPORTED = {
    "n": (None, 1), "best_of": (None, 1), "logprobs": (None, False, 0), "top_logprobs": (None, 0),
    "echo": (None, False), "suffix": (None,), "logit_bias": (None, {}),
    "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
    "parallel_tool_calls": (None,), "response_format": (None, {"type": "text"}),
}


# Constraints the engine checks too, stated in the schema so that it tells the truth
# (``openapi.py`` adds those that depend on the model and the server's limits).
def _integral(value: Any) -> Any:
    """JSON has one number type: 8.0 is the integer 8 (as JSON Schema says), 8.5 is not."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def Int(**bounds) -> Any:  # noqa: N802 -- used as a type
    """An integer field with bounds (``ge``, ``le``), also taking integral floats."""
    return Annotated[int, Field(**bounds), BeforeValidator(_integral)]


TokenId = Int(ge=0)
TokenIds = Annotated[list[TokenId], Field(min_length=1)]
Text = Annotated[str, Field(min_length=1)]
Prompt = Text | TokenIds | Annotated[list[Text], Field(min_length=1, max_length=1)] | Annotated[
    list[TokenIds], Field(min_length=1, max_length=1)]
MaxTokens = Int(ge=1)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    include_usage: bool = False


class SamplingFields(BaseModel):
    """The fields both APIs share: sampling, stopping, streaming."""

    model_config = ConfigDict(extra="forbid", strict=True)

    model: str | None = None
    max_tokens: MaxTokens | None = None
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: Int(ge=-1, le=MAX_TOP_K) = -1
    seed: Int(ge=0, le=MAX_SEED) | None = None
    stop: str | list[str] | None = None  # limits: the server's (``ServerLimits.check_stop``)
    stop_token_ids: list[TokenId] = Field(default_factory=list)
    ignore_eos: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # an end-user id for abuse monitoring; nothing to do here
    # Declared only to be refused by ``check_supported`` when used:
    n: Any = None
    best_of: Any = None
    logprobs: Any = None
    top_logprobs: Any = None
    echo: Any = None
    suffix: Any = None
    logit_bias: Any = None
    presence_penalty: Any = None
    frequency_penalty: Any = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    parallel_tool_calls: Any = None
    response_format: Any = None

    def check_supported(self) -> None:
        """Raises APIError(400) naming the first field used that is not implemented."""
        for name, unused in UNSUPPORTED.items():
            value = getattr(self, name)
            if not any(value == u and isinstance(value, bool) == isinstance(u, bool) for u in unused):
                raise APIError(400, f"{name}={value!r} is not supported by this server; leave it out.", name)
        if self.stream_options is not None and not self.stream:
            raise APIError(400, "stream_options is only allowed with stream=true.", "stream_options")

    def sampling_params(self, max_tokens: int) -> SamplingParams:
        """The engine's SamplingParams; its checks become 400s naming the field."""
        try:
            return SamplingParams(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                                  max_tokens=max_tokens, ignore_eos=self.ignore_eos, seed=self.seed,
                                  stop_token_ids=self.stop_token_ids, stop=self.stop_list())
        except (TypeError, ValueError) as err:
            raise from_validation(err, SAMPLING_FIELDS, None) from err

    def stop_list(self) -> list[str]:
        """``stop`` as a list: a string is a list of one ("" too, so it is refused as [""] is)."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else self.stop

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(SamplingFields):
    """``POST /v1/completions``: one prompt, as text or token ids. (OpenAI also takes a
    list of prompts; send one request per prompt instead: a list holds at most one.)"""

    prompt: Prompt
    max_tokens: MaxTokens | None = 16  # OpenAI's default for completions

    def single_prompt(self) -> str | list[int]:
        """The one prompt (a list of one prompt is unwrapped; the schema allows no more)."""
        prompt = self.prompt
        return prompt[0] if isinstance(prompt, list) and isinstance(prompt[0], (str, list)) else prompt


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_template_input(self) -> dict:
        """The message as a chat template expects it: role and plain-text content."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": self.role, "content": content}


class ChatCompletionRequest(SamplingFields):
    """``POST /v1/chat/completions``: a conversation, rendered to a prompt by the
    model's chat template. Without ``max_tokens`` the reply may fill the context."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: MaxTokens | None = None  # OpenAI's newer name for max_tokens

    def requested_max_tokens(self) -> tuple[int | None, str]:
        """The reply's token limit and the name of the field that set it."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"


FIELD_NAMES = frozenset(name for model in (CompletionRequest, ChatCompletionRequest, ChatMessage, TextPart, StreamOptions)
                        for name in model.model_fields)
