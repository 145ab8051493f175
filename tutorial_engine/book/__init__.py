"""The book's tooling, kept apart from the engine: notebook helpers (which checkpoint
to run, measured GPU results, engine source), the tiny checkpoints the CPU chapters and
tests use, exercise generation and grading."""

from .notebook import DATA_DIR, MODEL_ENV, TRAINED_MODEL, load_result, model_path, show_source

__all__ = ["DATA_DIR", "MODEL_ENV", "TRAINED_MODEL", "load_result", "model_path", "show_source"]
