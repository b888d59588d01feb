"""Fixtures shared by every test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgellm.models import resolve_model

# --- Bundled model files (edgellm.models). The first use assembles Gemma into the model
# --- cache once (`make setup` normally already did); later runs only check its stamp.


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1: llama architecture, ChatML chat template."""
    return resolve_model("smollm2-135m-instruct").path


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """Gemma-3-270M base Q4_K_M: gemma3 architecture, no chat template."""
    return resolve_model("gemma3-270m").path
