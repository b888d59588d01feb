"""The model catalog: bundled models, local files and Hugging Face references, and their GGUF
metadata. `resolve_model` is the single way to turn a reference into a loadable file."""

from edgellm.models.bundled import (
    BundledModel,
    BundledState,
    BundledStatus,
    Tier,
    bundled_status,
    get_bundled,
    list_bundled,
    model_cache_dir,
)
from edgellm.models.catalog import LocalModel, ModelSource, prepare_bundled, resolve_model
from edgellm.models.gguf_info import GGUFInfo, read_gguf_info

__all__ = [
    "BundledModel",
    "BundledState",
    "BundledStatus",
    "GGUFInfo",
    "LocalModel",
    "ModelSource",
    "Tier",
    "bundled_status",
    "get_bundled",
    "list_bundled",
    "model_cache_dir",
    "prepare_bundled",
    "read_gguf_info",
    "resolve_model",
]
