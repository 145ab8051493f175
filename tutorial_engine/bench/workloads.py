"""Named benchmark workloads: deterministic lists of prompts (token ids) and output lengths.

The headline, ``nanovllm``, is nano-vLLM's ``bench.py`` reproduced draw for draw:
``random.seed(0)``; for each of 256 sequences a prompt length ``randint(100, 1024)``
followed by that many token ids ``randint(0, 10000)``; *then*, in a second pass, an
output length ``randint(100, 1024)`` per sequence; temperature 0.6, ``ignore_eos``.
Drawing in that order gives 142,827 prompt tokens and 133,966 output tokens, the
totals in nano-vLLM's README table (checked by :func:`make_requests`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..sampling_params import SamplingParams


@dataclass(frozen=True)
class Workload:
    """A seeded random workload in nano-vLLM's style (Python's ``random`` module).

    Attributes:
        name: registry key.
        num_seqs: requests.
        prompt_len, output_len: inclusive ``(low, high)`` ranges of ``randint``.
        max_token_id: prompt token ids are ``randint(0, max_token_id)``.
        temperature: sampling temperature of every request.
        seed: ``random.seed`` value.
        expected_output_tokens: the documented total, checked when set.
        description: one line for tables and JSON.
    """

    name: str
    num_seqs: int
    prompt_len: tuple[int, int]
    output_len: tuple[int, int]
    max_token_id: int
    temperature: float
    seed: int = 0
    expected_output_tokens: int | None = None
    description: str = ""


WORKLOADS = {
    w.name: w
    for w in (
        Workload("nanovllm", 256, (100, 1024), (100, 1024), 10000, 0.6, 0, 133_966,
                 "nano-vLLM bench.py: 256 random prompts of 100-1024 tokens, 100-1024 output tokens each"),
        Workload("smoke", 8, (4, 40), (2, 12), 300, 0.6, 0, None,
                 "a tiny workload for CPU tests of the benchmark path"),
    )
}


@dataclass
class Requests:
    """The drawn requests: ``prompts[i]`` (token ids) wants ``max_tokens[i]`` output tokens."""

    workload: Workload
    prompts: list[list[int]]
    max_tokens: list[int]

    @property
    def num_prompt_tokens(self) -> int:
        return sum(map(len, self.prompts))

    @property
    def num_output_tokens(self) -> int:
        return sum(self.max_tokens)

    def sampling_params(self, temperature: float | None = None) -> list[SamplingParams]:
        """One SamplingParams per request (``ignore_eos``; the workload's temperature
        unless ``temperature`` overrides it, e.g. 0 for greedy checks)."""
        t = self.workload.temperature if temperature is None else temperature
        return [SamplingParams(temperature=t, ignore_eos=True, max_tokens=n) for n in self.max_tokens]

    def subset(self, num_seqs: int) -> Requests:
        """The first ``num_seqs`` requests (peers and slow ablations run on a prefix)."""
        if not 1 <= num_seqs <= len(self.prompts):
            raise ValueError(f"num_seqs={num_seqs} must be in [1, {len(self.prompts)}]")
        return Requests(self.workload, self.prompts[:num_seqs], self.max_tokens[:num_seqs])


def make_requests(workload: str | Workload) -> Requests:
    """Draw a workload's requests exactly as its source does.

    Raises:
        ValueError: for an unknown workload name, or if the drawn output total
            differs from the documented one (the draw order was changed).
    """
    if isinstance(workload, str):
        if workload not in WORKLOADS:
            raise ValueError(f"workload={workload!r} is unknown; choose one of {sorted(WORKLOADS)}")
        workload = WORKLOADS[workload]
    rng = random.Random(workload.seed)
    # Prompts first (each: its length, then its tokens), output lengths in a second pass.
    prompts = [[rng.randint(0, workload.max_token_id) for _ in range(rng.randint(*workload.prompt_len))]
               for _ in range(workload.num_seqs)]
    max_tokens = [rng.randint(*workload.output_len) for _ in range(workload.num_seqs)]
    requests = Requests(workload, prompts, max_tokens)
    expected = workload.expected_output_tokens
    if expected is not None and requests.num_output_tokens != expected:
        raise ValueError(f"workload {workload.name!r} drew {requests.num_output_tokens} output tokens, "
                         f"not the documented {expected}; the draw order must match the source exactly.")
    return requests
