"""The server's bounds on one request's cost, beyond what the engine checks.

Stop strings are matched on the generated text after every step, so their number and
length set the per-token cost: OpenAI takes at most 4; the default here, 16 strings of
up to 256 characters, leaves room for clients that send a few per role while keeping
each step's search under 16 x (255 + new) characters (``output_processor.find_stop``).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_BODY_BYTES = 4 * 2**20  # a 40k-token prompt as JSON token ids is ~0.3 MiB
DEFAULT_MAX_STOP_STRINGS = 16
DEFAULT_MAX_STOP_LENGTH = 256


@dataclass(frozen=True)
class ServerLimits:
    """Request bounds (command-line flags of ``serve``).

    Raises:
        ValueError: a bound below 1.
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # --max-body-bytes
    max_stop_strings: int = DEFAULT_MAX_STOP_STRINGS  # --max-stop-strings
    max_stop_length: int = DEFAULT_MAX_STOP_LENGTH  # --max-stop-length, in characters

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_stop_strings", "max_stop_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}={getattr(self, name)} must be >= 1.")

    def check_stop(self, stops: list[str]) -> None:
        """Raises ValueError (its message starts with "stop") for too many, too long or
        empty stop strings."""
        if len(stops) > self.max_stop_strings:
            raise ValueError(f"stop holds {len(stops)} strings; this server takes at most "
                           f"{self.max_stop_strings} (--max-stop-strings).")
        for i, stop in enumerate(stops):
            if not stop:
                raise ValueError(f"stop[{i}] is empty, which would match at once; drop it.")
            if len(stop) > self.max_stop_length:
                raise ValueError(f"stop[{i}] has {len(stop)} characters; this server takes at most "
                               f"{self.max_stop_length} (--max-stop-length).")
