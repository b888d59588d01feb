"""What a run directory records for reproducibility: package versions, the machine, the model."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import psutil

PACKAGES = ("edgellm", "llama-cpp-python", "httpx", "fastapi", "uvicorn", "numpy", "psutil")


def package_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "memory_bytes": psutil.virtual_memory().total,
        "python": sys.version.split()[0],
    }


def environment() -> dict[str, Any]:
    return {"packages": package_versions(), "machine": machine(), "argv": sys.argv}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_description(card: dict[str, Any] | None, model: str) -> dict[str, Any]:
    """The server's `/v1/models` card (EdgeLLM adds `meta`), plus the file's sha256 when the
    file is readable here (a local server, or a bundled model of the same name)."""
    described: dict[str, Any] = {"name": model, "card": card}
    meta = (card or {}).get("meta") or {}
    path = Path(meta["path"]) if isinstance(meta.get("path"), str) else None
    if path is None or not path.is_file():
        try:
            from edgellm.models.bundled import get_bundled

            if get_bundled(model) is not None:
                from edgellm.models import resolve_model

                path = resolve_model(model).path
        except Exception:  # the catalog is a convenience here, never a reason to fail
            path = None
    if path is not None and path.is_file():
        described["file"] = str(path)
        described["size_bytes"] = path.stat().st_size
        described["sha256"] = sha256_file(path)
    return described
