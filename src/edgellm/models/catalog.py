"""Turns a model reference into a local GGUF file: the single entry point is `resolve_model`.

A reference is, in this order of precedence:
1. a bundled model name (`smollm2-135m-instruct`, `gemma3-270m`);
2. `hf://owner/repo/file.gguf`, always a Hugging Face reference;
3. a path to an existing file, or anything that is clearly a path (`/...`, `./...`, `~/...`);
4. `owner/repo/file.gguf` (at least three segments), a Hugging Face reference;
5. any other `*.gguf`: a local file that does not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import gguf
from pydantic import BaseModel, ConfigDict

from edgellm.errors import ModelNotFoundError
from edgellm.models.bundled import BundledModel, ensure_bundled, get_bundled, list_bundled
from edgellm.models.hub import HF_SCHEME, download_from_hub, parse_hub_reference

ModelSource = Literal["bundled", "local", "huggingface"]

_PATH_PREFIXES = ("/", "./", "../", "~")

_REFERENCE_HELP = (
    "use a bundled model ("
    + ", ".join(model.name for model in list_bundled())
    + "), a path to a .gguf file, or a Hugging Face reference owner/repo/file.gguf"
)


class LocalModel(BaseModel):
    """A model file ready to load."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: Path
    source: ModelSource
    ref: str
    bundled: BundledModel | None = None


def resolve_model(ref: str, *, name: str | None = None) -> LocalModel:
    """Locate (assembling or downloading if needed) the model `ref` names.

    `name` overrides the default name: the bundled name, else the file's stem.
    Raises ModelNotFoundError for unknown names and missing files, ModelUnavailableError when
    a valid reference cannot be obtained here (hub unreachable, damaged bundled model).
    """
    ref = ref.strip()
    if not ref:
        raise ModelNotFoundError("empty model reference; " + _REFERENCE_HELP)
    bundled = get_bundled(ref)
    if bundled is not None:
        path = ensure_bundled(bundled)
        return LocalModel(
            name=name or bundled.name, path=path, source="bundled", ref=ref, bundled=bundled
        )
    if ref.startswith(HF_SCHEME):
        return _from_hub(ref, name)
    path = Path(ref).expanduser()
    if path.exists() or ref.startswith(_PATH_PREFIXES):
        return _from_local_file(path, ref, name)
    if parse_hub_reference(ref) is not None:
        return _from_hub(ref, name)
    if ref.endswith(".gguf"):
        return _from_local_file(path, ref, name)
    raise ModelNotFoundError(f"unknown model '{ref}'; {_REFERENCE_HELP}")


def prepare_bundled() -> list[LocalModel]:
    """Make every bundled model ready to load (idempotent, fast once done)."""
    return [resolve_model(model.name) for model in list_bundled()]


def _from_local_file(path: Path, ref: str, name: str | None) -> LocalModel:
    if not path.exists():
        raise ModelNotFoundError(f"model file '{path}' does not exist")
    if not path.is_file():
        raise ModelNotFoundError(f"model path '{path}' is not a file; pass the .gguf file itself")
    if not _has_gguf_magic(path):
        raise ModelNotFoundError(f"'{path}' is not a GGUF model file")
    return LocalModel(name=name or path.stem, path=path.resolve(), source="local", ref=ref)


def _from_hub(ref: str, name: str | None) -> LocalModel:
    reference = parse_hub_reference(ref)
    if reference is None:
        raise ModelNotFoundError(
            f"'{ref}' is not a valid Hugging Face reference; expected hf://owner/repo/file.gguf"
        )
    path = download_from_hub(reference)
    stem = Path(reference.filename).stem
    return LocalModel(name=name or stem, path=path, source="huggingface", ref=ref)


def _has_gguf_magic(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError:
        return False
    return len(magic) == 4 and int.from_bytes(magic, "little") == gguf.GGUF_MAGIC
