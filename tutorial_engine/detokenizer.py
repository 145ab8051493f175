"""Token ids to text, a few tokens at a time, for streaming.

Decoding each new token on its own is wrong in two ways. SentencePiece-style
tokenizers drop the leading space of the first token they decode ("▁was" alone
decodes to "was", so a stream would print "The little dogwas"), and byte-level
tokenizers split one multi-byte character (an emoji, a CJK character) over several
tokens, each of which alone decodes to the replacement character "\ufffd".

The fix (the one vLLM's incremental detokenizer uses): always decode a short window
that starts a few tokens *before* the new ones, and return only the text past the
window's earlier part. Two offsets into the token list delimit it:

    tokens:  ... | prefix_offset ... read_offset | new tokens ... |
                   <- already returned text ->    <- new text ->

``decode(tokens[prefix_offset:])`` minus ``decode(tokens[prefix_offset:read_offset])``
is the new text; the context before it keeps the spaces right. While the new text
ends in "\ufffd" (an incomplete character) nothing is returned and the offsets stay,
so the character comes out whole once its last byte arrives.
"""

from __future__ import annotations

# Tokens of context before the new ones (vLLM uses the same number): enough for a
# tokenizer's word-boundary rules, few enough that each decode stays cheap.
CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    """The text of one request's output, as it grows.

    Args:
        tokenizer: a Hugging Face tokenizer, or None (then all text is "").
        prompt_token_ids: the request's prompt; its last tokens are the first context.

    Special tokens (EOS, BOS) are skipped, as in ``LLM.generate``'s text.
    """

    def __init__(self, tokenizer, prompt_token_ids: list[int]) -> None:
        self.tokenizer = tokenizer
        self.tokens = list(prompt_token_ids[-CONTEXT_TOKENS:])
        self.prefix_offset = 0
        self.read_offset = len(self.tokens)

    def _decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def add(self, token_ids: list[int]) -> str:
        """Append ``token_ids``; return the new text they complete (maybe "")."""
        self.tokens.extend(token_ids)
        if self.tokenizer is None:
            return ""
        prefix_text = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.tokens[self.prefix_offset:])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""  # a special token, or a character still missing bytes
        # Drop tokens before the new window so the list stays short on long outputs.
        del self.tokens[:self.read_offset]
        self.prefix_offset, self.read_offset = 0, len(self.tokens)
        return new_text[len(prefix_text):]

    def flush(self) -> str:
        """At the end of a request: the text of tokens still held back (an incomplete
        character shows as "\ufffd", as a one-shot decode would show it)."""
        if self.tokenizer is None or self.read_offset == len(self.tokens):
            return ""
        prefix_text = self._decode(self.tokens[self.prefix_offset:self.read_offset])
        new_text = self._decode(self.tokens[self.prefix_offset:])
        self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
        return new_text[len(prefix_text):]


def decode_output(tokenizer, prompt_token_ids: list[int], output_token_ids: list[int]) -> str:
    """The whole output's text in one decode, with the same prompt context as
    :class:`IncrementalDetokenizer`, so both give the same text."""
    if tokenizer is None:
        return ""
    context = prompt_token_ids[-CONTEXT_TOKENS:]
    prefix_text = tokenizer.decode(context, skip_special_tokens=True)
    return tokenizer.decode(context + output_token_ids, skip_special_tokens=True)[len(prefix_text):]
