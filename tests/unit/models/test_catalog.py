from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from edgellm.errors import ModelNotFoundError, ModelUnavailableError
from edgellm.models import bundled, catalog, hub, prepare_bundled, resolve_model
from edgellm.models.bundled import GEMMA3_270M, ChunkedFile
from edgellm.models.hub import HubReference

HF_REF = "bartowski/SmolLM2-360M-Instruct-GGUF/SmolLM2-360M-Instruct-Q4_K_M.gguf"


def test_bundled_name(smollm2_path: Path) -> None:
    model = resolve_model("smollm2-135m-instruct")

    assert model.name == "smollm2-135m-instruct"
    assert model.source == "bundled"
    assert model.path == smollm2_path
    assert model.bundled is not None
    assert model.bundled.tier == "edge-small"


def test_bundled_name_with_custom_name(gemma_path: Path) -> None:
    model = resolve_model("gemma3-270m", name="large")

    assert (model.name, model.path, model.source) == ("large", gemma_path, "bundled")


def test_local_file(tiny_gguf: Path) -> None:
    model = resolve_model(str(tiny_gguf))

    assert (model.name, model.path, model.source) == ("tiny-model", tiny_gguf, "local")
    assert model.ref == str(tiny_gguf)
    assert model.bundled is None


def test_local_file_with_name_and_relative_path(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_gguf.parent)

    model = resolve_model("./tiny-model.gguf", name="tiny")

    assert (model.name, model.path) == ("tiny", tiny_gguf)
    assert model.path.is_absolute()


def test_home_relative_path(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tiny_gguf.parent))

    assert resolve_model("~/tiny-model.gguf").path == tiny_gguf


def test_existing_local_file_wins_over_hub_shape(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nested = tiny_gguf.parent / "owner" / "repo" / "model.gguf"
    nested.parent.mkdir(parents=True)
    nested.write_bytes(tiny_gguf.read_bytes())
    monkeypatch.chdir(tiny_gguf.parent)

    model = resolve_model("owner/repo/model.gguf")

    assert (model.source, model.path) == ("local", nested)


@pytest.mark.parametrize("ref", ["/nonexistent/model.gguf", "model.gguf", "models/model.gguf"])
def test_missing_local_file(ref: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    with pytest.raises(ModelNotFoundError, match=r"model file '.*model\.gguf' does not exist"):
        resolve_model(ref)


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"is not a file; pass the \.gguf file itself"):
        resolve_model(str(tmp_path))


def test_non_gguf_file_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 a zip file")

    with pytest.raises(ModelNotFoundError, match="is not a GGUF model file"):
        resolve_model(str(path))


@pytest.mark.parametrize("ref", ["gpt-4", "smollm2", ""])
def test_unknown_name_lists_what_is_accepted(ref: str) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model(ref)

    message = caught.value.message
    assert "smollm2-135m-instruct, gemma3-270m" in message
    assert "owner/repo/file.gguf" in message
    assert "\n" not in message


class RecordingDownload:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.references: list[HubReference] = []

    def __call__(self, reference: HubReference) -> Path:
        self.references.append(reference)
        return self.path


@pytest.mark.parametrize("ref", [HF_REF, "hf://" + HF_REF])
def test_hub_reference(ref: str, monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path) -> None:
    download = RecordingDownload(tiny_gguf)
    monkeypatch.setattr(catalog, "download_from_hub", download)

    model = resolve_model(ref)

    assert (model.name, model.path, model.source) == (
        "SmolLM2-360M-Instruct-Q4_K_M",
        tiny_gguf,
        "huggingface",
    )
    assert download.references == [
        HubReference("bartowski/SmolLM2-360M-Instruct-GGUF", "SmolLM2-360M-Instruct-Q4_K_M.gguf")
    ]


def test_hub_offline_error_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(repo_id: str, filename: str, **kwargs: Any) -> str:
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(hub, "hf_hub_download", offline)

    with pytest.raises(ModelUnavailableError, match="hub is unreachable"):
        resolve_model("hf://" + HF_REF)


def test_malformed_hf_reference() -> None:
    with pytest.raises(ModelNotFoundError, match=r"expected hf://owner/repo/file\.gguf"):
        resolve_model("hf://just-a-file.gguf")


def test_bundled_assembly_failure_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chunk = tmp_path / "part0"
    chunk.write_bytes(b"not the real model")
    broken = ChunkedFile(GEMMA3_270M, lambda: [chunk], lambda: hashlib.sha256(b"x").hexdigest())
    monkeypatch.setitem(bundled._SOURCES, "gemma3-270m", broken)
    monkeypatch.setenv("EDGELLM_CACHE_DIR", str(tmp_path / "cache"))

    with pytest.raises(ModelUnavailableError, match="'gemma3-270m' is not available"):
        resolve_model("gemma3-270m")


def test_prepare_bundled(smollm2_path: Path, gemma_path: Path) -> None:
    models = prepare_bundled()

    assert [(m.name, m.path, m.source) for m in models] == [
        ("smollm2-135m-instruct", smollm2_path, "bundled"),
        ("gemma3-270m", gemma_path, "bundled"),
    ]
