"""Datasets shipped with EdgeLLM (each folder has a SOURCE.md with origin, licence and sha256)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any


def data_file(*parts: str) -> Traversable:
    """A bundled data file, e.g. `data_file("winogrande", "dev.jsonl")`."""
    node: Traversable = files(__name__)
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        raise FileNotFoundError(f"bundled data file {'/'.join(parts)} is missing")
    return node


def read_jsonl(*parts: str) -> Iterator[dict[str, Any]]:
    with data_file(*parts).open("r", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
