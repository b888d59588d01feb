"""Reference tests reuse the integration fixtures (model paths)."""

from tests.integration.conftest import model_paths

__all__ = ["model_paths"]
