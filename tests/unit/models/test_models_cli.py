"""`edgellm models ...` through Typer's runner, on the sub-app alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgellm.cli.models import app
from edgellm.errors import ModelUnavailableError
from edgellm.models import bundled, hub
from edgellm.models.bundled import GEMMA3_270M, ChunkedFile


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def bundled_ready(smollm2_path: Path, gemma_path: Path) -> dict[str, Path]:
    return {"smollm2-135m-instruct": smollm2_path, "gemma3-270m": gemma_path}


def test_list_json(runner: CliRunner, bundled_ready: dict[str, Path]) -> None:
    result = runner.invoke(app, ["list", "--json"])

    assert result.exit_code == 0, result.output
    entries = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert set(entries) == set(bundled_ready)
    for name, path in bundled_ready.items():
        assert entries[name]["state"] == "ready"
        assert entries[name]["path"] == str(path)
        assert entries[name]["file_size"] == path.stat().st_size
    assert entries["gemma3-270m"]["tier"] == "edge-large"
    assert entries["smollm2-135m-instruct"]["quantization"] == "Q4_1"


def test_list_table(runner: CliRunner, bundled_ready: dict[str, Path]) -> None:
    result = runner.invoke(app, ["list"])

    assert result.exit_code == 0, result.output
    for name, path in bundled_ready.items():
        assert name in result.stdout
        assert f"{path}\n" in result.stdout  # whole, not folded, even at 80 columns
    assert "edge-small" in result.stdout
    assert "Q4_K_M" in result.stdout
    assert result.stdout.count("ready") == 2


def test_list_shows_unassembled_model(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    chunk = tmp_path / "part0"
    chunk.write_bytes(b"GGUF")
    monkeypatch.setitem(
        bundled._SOURCES, "gemma3-270m", ChunkedFile(GEMMA3_270M, lambda: [chunk], lambda: "0")
    )
    monkeypatch.setenv("EDGELLM_CACHE_DIR", str(tmp_path / "cache"))

    result = runner.invoke(app, ["list", "--json"])

    gemma = next(e for e in json.loads(result.stdout) if e["name"] == "gemma3-270m")
    assert (gemma["state"], gemma["file_size"]) == ("not-assembled", None)


def test_inspect_json(runner: CliRunner, smollm2_path: Path) -> None:
    result = runner.invoke(app, ["inspect", "smollm2-135m-instruct", "--json"])

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["model"] == {
        "name": "smollm2-135m-instruct",
        "path": str(smollm2_path),
        "source": "bundled",
        "ref": "smollm2-135m-instruct",
    }
    assert payload["gguf"]["architecture"] == "llama"
    assert payload["gguf"]["quantization"] == "Q4_1"
    assert payload["gguf"]["context_length"] == 8192
    assert payload["gguf"]["sha256"] is None


def test_inspect_table_and_template(runner: CliRunner, smollm2_path: Path) -> None:
    result = runner.invoke(
        app, ["inspect", "smollm2-135m-instruct", "--show-template"], env={"COLUMNS": "200"}
    )

    assert result.exit_code == 0, result.output
    assert "134,515,008 (135M)" in result.stdout
    assert "Q4_1" in result.stdout
    assert "8192" in result.stdout
    assert "1 / 2" in result.stdout  # BOS / EOS
    # The template is printed verbatim, brackets included.
    assert "{% for message in messages %}" in result.stdout
    assert "<|im_start|>" in result.stdout


def test_inspect_base_model_has_no_template(runner: CliRunner, gemma_path: Path) -> None:
    result = runner.invoke(app, ["inspect", "gemma3-270m", "--show-template"])

    assert result.exit_code == 0, result.output
    assert "(no chat template)" in result.stdout


def test_inspect_with_sha256(runner: CliRunner, tiny_gguf: Path) -> None:
    import hashlib

    result = runner.invoke(app, ["inspect", str(tiny_gguf), "--json", "--sha256"])

    assert json.loads(result.stdout)["gguf"]["sha256"] == (
        hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    )


def test_unknown_model_is_one_red_line(runner: CliRunner) -> None:
    result = runner.invoke(app, ["inspect", "gpt-4"])

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: unknown model 'gpt-4'; use a bundled model")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_pull_local_file_prints_its_path(runner: CliRunner, tiny_gguf: Path) -> None:
    result = runner.invoke(app, ["pull", str(tiny_gguf)])

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tiny_gguf}\n"


def test_pull_hub_reference_offline(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(repo_id: str, filename: str, **kwargs: Any) -> str:
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(hub, "hf_hub_download", offline)

    result = runner.invoke(app, ["pull", "hf://owner/repo/model.gguf"])

    assert result.exit_code == 1
    assert "Hugging Face hub is unreachable" in result.stderr
    assert "'owner/repo/model.gguf' is not in the local cache" in result.stderr


def test_prepare_prints_one_line_per_model(
    runner: CliRunner, bundled_ready: dict[str, Path]
) -> None:
    result = runner.invoke(app, ["prepare"])

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{name}: {path}" for name, path in bundled_ready.items()]


def test_prepare_reports_failures_and_continues(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, smollm2_path: Path
) -> None:
    class Broken:
        def status(self) -> bundled.BundledStatus:
            raise AssertionError("not used")

        def ensure(self) -> Path:
            raise ModelUnavailableError("bundled model 'gemma3-270m' is not available: test")

    monkeypatch.setitem(bundled._SOURCES, "gemma3-270m", Broken())

    result = runner.invoke(app, ["prepare"])

    assert result.exit_code == 1
    assert result.stdout == f"smollm2-135m-instruct: {smollm2_path}\n"
    assert "error: bundled model 'gemma3-270m' is not available: test" in result.stderr
