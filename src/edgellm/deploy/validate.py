"""Schema validation of rendered objects with `kubernetes-validate` (a dev dependency: it bundles
the Kubernetes OpenAPI schemas, so this works offline)."""

from __future__ import annotations

import importlib
from typing import Any


def supported_versions() -> list[str]:
    utils = _utils()
    versions: list[str] = sorted(
        set(utils.all_versions()), key=lambda v: [int(x) for x in v.split(".")]
    )
    return versions


def validate(obj: dict[str, Any], version: str) -> str | None:
    """None when `obj` is valid for Kubernetes `version` (strict: unknown fields are errors)."""
    utils = _utils()
    try:
        utils.validate(obj, version, strict=True)
    except utils.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path) or "(top level)"
        return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {where}: {exc.message}"
    except (
        utils.SchemaNotFoundError,
        utils.VersionNotSupportedError,
        utils.InvalidSchemaError,
    ) as exc:
        return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: {exc}"
    return None


def _utils() -> Any:
    try:
        return importlib.import_module("kubernetes_validate.utils")
    except ImportError as exc:
        raise RuntimeError(
            "validation needs the `kubernetes-validate` package (uv sync --group dev)"
        ) from exc
