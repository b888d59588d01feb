"""Where `make reference` puts the upstream llama.cpp tools, and how to find them.

`scripts/build_reference.sh` builds `llama-bench`, `llama-server` and `llama-perplexity` from the
llama.cpp sources vendored in the pinned llama-cpp-python sdist, into
`<cache>/reference/llama-cpp-python-<version>/bin`. Benchmarks and the optional `reference` tests
use them as the yardstick for EdgeLLM's engine. The version in the path is the *installed*
llama-cpp-python, so a stale reference built for another pin is never picked up by mistake.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

CACHE_DIR_ENV = "EDGELLM_CACHE_DIR"
TOOLS = ("llama-bench", "llama-server", "llama-perplexity")

__all__ = [
    "CACHE_DIR_ENV",
    "TOOLS",
    "ReferenceToolNotFoundError",
    "cache_dir",
    "find_tool",
    "reference_dir",
    "require_tool",
]


class ReferenceToolNotFoundError(FileNotFoundError):
    """An upstream llama.cpp tool has not been built (run `make reference`)."""


def cache_dir() -> Path:
    """EdgeLLM's cache root: `$EDGELLM_CACHE_DIR`, else `~/.cache/edgellm` (as the Makefile)."""
    configured = os.environ.get(CACHE_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "edgellm"


def reference_dir() -> Path:
    """The `bin` directory holding the tools built for the installed llama-cpp-python.

    Raises `importlib.metadata.PackageNotFoundError` if llama-cpp-python is not installed.
    """
    installed = version("llama-cpp-python")
    return cache_dir() / "reference" / f"llama-cpp-python-{installed}" / "bin"


def _tool_path(name: str) -> Path:
    if not name or name in {".", ".."} or "/" in name or os.sep in name:
        raise ValueError(f"expected a plain tool name such as 'llama-bench', got {name!r}")
    return reference_dir() / name


def find_tool(name: str) -> Path | None:
    """The path of the reference tool `name` (e.g. "llama-bench"), or None if it is not built."""
    path = _tool_path(name)
    if path.is_file() and os.access(path, os.X_OK):
        return path
    return None


def require_tool(name: str) -> Path:
    """Like `find_tool`, but raise `ReferenceToolNotFoundError` saying how to build it."""
    path = find_tool(name)
    if path is None:
        expected = _tool_path(name)
        raise ReferenceToolNotFoundError(
            f"upstream llama.cpp tool {name!r} not found at {expected}: run `make reference` to "
            "build llama-bench, llama-server and llama-perplexity from the pinned "
            "llama-cpp-python sources (if make's CACHE_DIR is not ~/.cache/edgellm, set "
            f"{CACHE_DIR_ENV} to the same directory)"
        )
    return path
