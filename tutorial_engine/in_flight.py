"""What a request has in flight under overlap scheduling: the rules in one place.

With overlap scheduling (chapter 7) step N+1 is planned while the device still runs
step N, so a request may be planned again before the token step N sampled for it has
reached the CPU. The engine keeps one invariant:

    a request has at most one step's sampled tokens in flight, and a plan that needs
    one of them as input names its *input row*: the row of that step's sampled-token
    tensor that holds it (SGLang's "future" token map; vLLM's async scheduling).

A plain step samples one token per request, so a request has at most one token in
flight and one input row.

Speculative decoding (chapter 10) keeps the invariant by a second rule, the simplest
correct one:

    with speculation on, a step that sampled (a decode, a verify, a prompt's last
    chunk) delivers its tokens to the CPU before the next step is planned.

Two reasons, each enough: prompt lookup drafts from the request's tokens, so they must
be on the CPU; and a verify step emits between 1 and ``n + 1`` tokens, so until its
result arrives nobody knows how many of its row's computed tokens survive, nor where
the next row starts. A verify step is therefore never overlapped, and nothing is in
flight when a speculating step is planned. Steps that only run prompt chunks stay
overlapped (``LLMEngine._wait_before_planning``).

Where the rules apply, each once:

- planning (``scheduler.py``): a request whose in-flight token ends it by length is
  not planned again (:meth:`InFlight.ends_by_length`); a preempted request is not
  re-admitted while its token is in flight; committing a plan marks the rows
  (:meth:`InFlight.launch`).
- the step plan (``step_plan.py``): that input is a placeholder, and the plan's
  ``input_rows`` say where the device finds it (``ModelRunner.prepare``).
- results (``Scheduler.update_from_output``): the token arrives (:meth:`InFlight.arrive`);
  a request that finished meanwhile drops it.

In the plain loop a step's tokens arrive before the next plan: nothing is ever in flight.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class InFlight:
    """A request's sampled tokens that launched steps have not delivered to the CPU.

    Attributes:
        num_tokens: how many (0 or 1).
        input_row: the row of the latest launched step's sampled tokens that holds the
            newest of them; meaningful only while ``num_tokens > 0``.
    """

    num_tokens: int = 0
    input_row: int = -1

    def launch(self, row: int) -> None:
        """A launched step will sample this request's next token into ``row``."""
        self.num_tokens += 1
        self.input_row = row

    def arrive(self) -> None:
        """The oldest in-flight token reached the CPU."""
        self.num_tokens -= 1

    def pending_input_row(self) -> int:
        """The input row a step planned now must read this request's last token from, or -1."""
        return self.input_row if self.num_tokens else -1

    def ends_by_length(self, num_tokens: int, num_prompt_tokens: int, max_tokens: int,
                       max_model_len: int) -> bool:
        """True when the tokens in flight will end the request by length (``max_tokens``
        outputs or ``max_model_len`` tokens, counting the ``num_tokens`` already known),
        so planning another step for it would be wasted."""
        total = num_tokens + self.num_tokens
        by_output = total - num_prompt_tokens >= max_tokens
        return self.num_tokens > 0 and (by_output or total >= max_model_len)
