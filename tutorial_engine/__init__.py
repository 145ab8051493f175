"""tutorial_engine: a small, fast LLM inference engine, built chapter by chapter."""

from .config import EngineConfig
from .llm import LLM
from .sampling_params import SamplingParams

__all__ = ["LLM", "EngineConfig", "SamplingParams"]
__version__ = "0.1.0"
