"""Locating the upstream llama.cpp tools built by `make reference` (edgellm.reference)."""

from __future__ import annotations

import importlib.metadata
import stat
import subprocess
from pathlib import Path

import pytest

from edgellm import reference
from edgellm.reference import ReferenceToolNotFoundError

FAKE_VERSION = "9.8.7"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty EdgeLLM cache in tmp_path, with a fixed llama-cpp-python version."""
    root = tmp_path / "cache"
    monkeypatch.setenv(reference.CACHE_DIR_ENV, str(root))
    monkeypatch.setattr(reference, "version", lambda dist: FAKE_VERSION)
    return root


def expected_bin(root: Path, ver: str = FAKE_VERSION) -> Path:
    return root / "reference" / f"llama-cpp-python-{ver}" / "bin"


def make_tool(bin_dir: Path, name: str, *, executable: bool = True) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho fake {name} "$@"\n')
    mode = path.stat().st_mode
    # No execute bit at all: even root cannot execute it (os.access X_OK is False).
    path.chmod((mode | stat.S_IXUSR) if executable else (mode & ~0o111))
    return path


def test_env_override_sets_cache_root(cache: Path) -> None:
    assert reference.cache_dir() == cache
    assert reference.reference_dir() == expected_bin(cache)


def test_default_cache_is_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(reference.CACHE_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(reference, "version", lambda dist: FAKE_VERSION)
    assert reference.reference_dir() == expected_bin(tmp_path / ".cache" / "edgellm")


@pytest.mark.parametrize("value", ["", "   "])
def test_blank_env_falls_back_to_default(
    value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(reference.CACHE_DIR_ENV, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert reference.cache_dir() == tmp_path / ".cache" / "edgellm"


def test_env_override_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(reference.CACHE_DIR_ENV, "~/elsewhere")
    assert reference.cache_dir() == tmp_path / "elsewhere"


def test_directory_is_named_after_installed_llama_cpp_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(reference.CACHE_DIR_ENV, str(tmp_path))
    installed = importlib.metadata.version("llama-cpp-python")
    assert reference.reference_dir() == expected_bin(tmp_path, installed)


def test_asks_for_the_distribution_name(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake_version(dist: str) -> str:
        asked.append(dist)
        return FAKE_VERSION

    monkeypatch.setattr(reference, "version", fake_version)
    reference.reference_dir()
    assert asked == ["llama-cpp-python"]


@pytest.mark.parametrize("name", reference.TOOLS)
def test_missing_tool(cache: Path, name: str) -> None:
    assert reference.find_tool(name) is None
    with pytest.raises(ReferenceToolNotFoundError, match="make reference") as info:
        reference.require_tool(name)
    message = str(info.value)
    assert name in message
    assert str(expected_bin(cache) / name) in message
    assert reference.CACHE_DIR_ENV in message
    assert isinstance(info.value, FileNotFoundError)


def test_present_tool_is_found_and_runs(cache: Path) -> None:
    tool = make_tool(expected_bin(cache), "llama-bench")
    assert reference.find_tool("llama-bench") == tool
    assert reference.require_tool("llama-bench") == tool
    out = subprocess.run(
        [str(reference.require_tool("llama-bench")), "--help"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert out.strip() == "fake llama-bench --help"


def test_only_the_requested_tool_is_found(cache: Path) -> None:
    make_tool(expected_bin(cache), "llama-server")
    assert reference.find_tool("llama-server") is not None
    assert reference.find_tool("llama-bench") is None
    assert reference.find_tool("llama-perplexity") is None


def test_tool_built_for_another_version_is_ignored(cache: Path) -> None:
    make_tool(expected_bin(cache, "0.0.1"), "llama-bench")
    assert reference.find_tool("llama-bench") is None


def test_tool_in_other_cache_is_ignored(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    make_tool(expected_bin(other), "llama-bench")
    assert reference.find_tool("llama-bench") is None
    monkeypatch.setenv(reference.CACHE_DIR_ENV, str(other))
    assert reference.find_tool("llama-bench") == expected_bin(other) / "llama-bench"


def test_non_executable_file_is_not_a_tool(cache: Path) -> None:
    make_tool(expected_bin(cache), "llama-bench", executable=False)
    assert reference.find_tool("llama-bench") is None
    with pytest.raises(ReferenceToolNotFoundError):
        reference.require_tool("llama-bench")


def test_directory_is_not_a_tool(cache: Path) -> None:
    (expected_bin(cache) / "llama-bench").mkdir(parents=True)
    assert reference.find_tool("llama-bench") is None


@pytest.mark.parametrize("name", ["", ".", "..", "../llama-bench", "bin/llama-bench", "/bin/sh"])
def test_rejects_paths(cache: Path, name: str) -> None:
    with pytest.raises(ValueError, match="plain tool name"):
        reference.find_tool(name)
    with pytest.raises(ValueError, match="plain tool name"):
        reference.require_tool(name)
