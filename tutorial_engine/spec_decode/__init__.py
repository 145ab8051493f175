"""Speculative decoding (chapter 10): propose several tokens cheaply, let the target
model verify them in one pass, keep the longest agreeing prefix plus one token of
its own, with an output distribution exactly the target's (Leviathan et al., 2023;
Chen et al., 2023).

* :mod:`.config`: ``speculative_config`` parsed and validated (vLLM's dict form);
* :mod:`.ngram`: prompt-lookup proposals from the request's own tokens;
* :mod:`.rejection`: the acceptance rule, batched, seeded;
* :mod:`.verify`: a verify step's logits rows and the computed tokens that survive it;
* :mod:`.metrics`: proposal / acceptance counters and the expected accepted length.
"""

from .config import SpeculativeConfig, check_draft_compatible, parse_speculative_config
from .metrics import SpecDecodeStats, expected_accepted_length
from .ngram import NgramProposer, propose_ngram
from .rejection import RejectionSampler, VerifyOutput
from .verify import num_computed_after_verify, verify_logits_indices

__all__ = [
    "NgramProposer",
    "RejectionSampler",
    "SpecDecodeStats",
    "SpeculativeConfig",
    "VerifyOutput",
    "check_draft_compatible",
    "expected_accepted_length",
    "num_computed_after_verify",
    "parse_speculative_config",
    "propose_ngram",
    "verify_logits_indices",
]
