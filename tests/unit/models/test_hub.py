"""Hub access with a fake `hf_hub_download`: nothing here touches the network."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)

from edgellm.errors import ModelNotFoundError, ModelUnavailableError
from edgellm.models import hub
from edgellm.models.hub import HubReference, download_from_hub, parse_hub_reference

REFERENCE = HubReference(
    "bartowski/SmolLM2-360M-Instruct-GGUF", "SmolLM2-360M-Instruct-Q4_K_M.gguf"
)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (
            "bartowski/SmolLM2-360M-Instruct-GGUF/SmolLM2-360M-Instruct-Q4_K_M.gguf",
            REFERENCE,
        ),
        (
            "hf://bartowski/SmolLM2-360M-Instruct-GGUF/SmolLM2-360M-Instruct-Q4_K_M.gguf",
            REFERENCE,
        ),
        ("owner/repo/sub/dir/model.gguf", HubReference("owner/repo", "sub/dir/model.gguf")),
        ("owner/repo@v1.0/model.gguf", HubReference("owner/repo", "model.gguf", "v1.0")),
    ],
)
def test_parse_valid_references(ref: str, expected: HubReference) -> None:
    assert parse_hub_reference(ref) == expected


@pytest.mark.parametrize(
    "ref",
    ["model.gguf", "owner/model.gguf", "owner/repo/model.bin", "owner//model.gguf", "o/@v/m.gguf"],
)
def test_parse_rejects_other_shapes(ref: str) -> None:
    assert parse_hub_reference(ref) is None


def test_reference_text_round_trips() -> None:
    ref = "owner/repo@main/sub/model.gguf"
    parsed = parse_hub_reference(ref)
    assert parsed is not None
    assert str(parsed) == ref


@dataclass
class FakeHub:
    """Stands in for hf_hub_download: `online` answers network calls, `cache` local-only ones."""

    online: Exception | None = None
    cache: Path | None = None
    downloaded: Path | None = None
    cached_after_failure: Path | None = None  # another process completes the download
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, repo_id: str, filename: str, **kwargs: Any) -> str:
        self.calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        if kwargs.get("local_files_only"):
            if self.cache is None:
                raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache")
            return str(self.cache)
        if self.online is not None:
            self.cache = self.cached_after_failure
            raise self.online
        assert self.downloaded is not None
        return str(self.downloaded)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(hub, "hf_hub_download", fake)
    return fake


def _http_error(kind: type[HfHubHTTPError], status: int) -> HfHubHTTPError:
    request = httpx2.Request("GET", "https://huggingface.co/owner/repo/resolve/main/x.gguf")
    return kind(f"{status} error", response=httpx2.Response(status, request=request))


def test_cached_file_is_used_without_the_network(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.cache = tmp_path / "cached.gguf"
    fake_hub.online = AssertionError("the hub must not be contacted")

    assert download_from_hub(REFERENCE) == fake_hub.cache
    assert fake_hub.calls == [
        {
            "repo_id": REFERENCE.repo_id,
            "filename": REFERENCE.filename,
            "revision": None,
            "local_files_only": True,
        }
    ]


def test_uncached_file_is_downloaded(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.downloaded = tmp_path / "snapshot" / "model.gguf"

    assert download_from_hub(REFERENCE) == fake_hub.downloaded
    assert fake_hub.calls[-1] == {
        "repo_id": REFERENCE.repo_id,
        "filename": REFERENCE.filename,
        "revision": None,
    }


def test_revision_is_passed_on(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.downloaded = tmp_path / "model.gguf"

    download_from_hub(HubReference("owner/repo", "model.gguf", "abc123"))

    assert [call["revision"] for call in fake_hub.calls] == ["abc123", "abc123"]


@pytest.mark.parametrize(
    "network_error",
    [
        LocalEntryNotFoundError("outgoing traffic has been disabled"),
        ConnectionError("Name or service not known"),
        httpx2.ConnectError("connection refused"),
        TimeoutError("timed out"),
    ],
)
def test_offline_and_not_cached_is_a_clear_error(
    fake_hub: FakeHub, network_error: Exception
) -> None:
    fake_hub.online = network_error

    with pytest.raises(ModelUnavailableError) as caught:
        download_from_hub(REFERENCE)

    assert caught.value.message == (
        "Hugging Face hub is unreachable (offline?) and "
        "'bartowski/SmolLM2-360M-Instruct-GGUF/SmolLM2-360M-Instruct-Q4_K_M.gguf' is not in "
        "the local cache; download it elsewhere and pass the local .gguf path"
    )
    # cache, hub, then the cache again in case another process finished the download
    assert [call.get("local_files_only", False) for call in fake_hub.calls] == [True, False, True]


def test_download_finished_elsewhere_while_offline(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.online = httpx2.ConnectError("connection reset")
    fake_hub.cached_after_failure = tmp_path / "cached.gguf"

    assert download_from_hub(REFERENCE) == fake_hub.cached_after_failure


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_http_error(RepositoryNotFoundError, 404), "does not exist or is private"),
        (_http_error(RemoteEntryNotFoundError, 404), "has no file"),
    ],
)
def test_unknown_repository_or_file_is_not_found(
    fake_hub: FakeHub, error: Exception, expected: str
) -> None:
    fake_hub.online = error

    with pytest.raises(ModelNotFoundError, match=expected):
        download_from_hub(REFERENCE)
    assert len(fake_hub.calls) == 2  # the cache, then the hub; no second look at the cache


def test_gated_repository_is_unavailable(fake_hub: FakeHub) -> None:
    fake_hub.online = _http_error(GatedRepoError, 403)

    with pytest.raises(ModelUnavailableError, match="is gated: accept its licence"):
        download_from_hub(REFERENCE)


def test_server_error_is_unavailable(fake_hub: FakeHub) -> None:
    fake_hub.online = _http_error(HfHubHTTPError, 503)

    with pytest.raises(ModelUnavailableError, match="answered HTTP 503"):
        download_from_hub(REFERENCE)
