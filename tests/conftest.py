"""Shared fixtures: tiny random checkpoints (built once per session) and the real
stories260K checkpoint from ../shared (skipped with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tutorial_engine.book.tiny import write_tiny_checkpoint

SHARED_MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
STORIES260K = SHARED_MODELS / "stories260K"


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: write_tiny_checkpoint(root / arch, arch) for arch in ("qwen3", "llama", "qwen2")}


@pytest.fixture(scope="session")
def stories260k() -> Path:
    if not (STORIES260K / "config.json").is_file():
        pytest.skip(f"{STORIES260K} is absent (it ships beside the repository in CI, not with a checkout)")
    return STORIES260K
