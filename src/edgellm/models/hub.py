"""Model files from the Hugging Face hub, through its own download cache.

A reference is `owner/repo/path/to/file.gguf`, optionally prefixed with `hf://` and optionally
pinned with `owner/repo@revision/...`. The local hub cache is consulted first: an edge node
must start without the hub once a file is there, and when the hub is unreachable
huggingface_hub retries for about 20 seconds before giving up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from edgellm.errors import ModelNotFoundError, ModelUnavailableError

HF_SCHEME = "hf://"


@dataclass(frozen=True)
class HubReference:
    repo_id: str
    filename: str
    revision: str | None = None

    def __str__(self) -> str:
        revision = f"@{self.revision}" if self.revision else ""
        return f"{self.repo_id}{revision}/{self.filename}"


def parse_hub_reference(ref: str) -> HubReference | None:
    """The reference `ref` names, or None if it does not have the shape of one."""
    parts = ref.removeprefix(HF_SCHEME).split("/")
    if len(parts) < 3 or not all(parts) or not parts[-1].endswith(".gguf"):
        return None
    owner, repo, *file_parts = parts
    repo, _, revision = repo.partition("@")
    if not repo:
        return None
    return HubReference(f"{owner}/{repo}", "/".join(file_parts), revision or None)


def download_from_hub(reference: HubReference) -> Path:
    """The local path of the referenced file, downloading it if it is not cached yet."""
    cached = _cached_path(reference)
    if cached is not None:
        return cached
    try:
        return Path(
            hf_hub_download(reference.repo_id, reference.filename, revision=reference.revision)
        )
    except GatedRepoError as error:
        raise ModelUnavailableError(
            f"Hugging Face repository '{reference.repo_id}' is gated: accept its licence on the "
            "hub and log in (`hf auth login`), or download the file and pass the local .gguf path"
        ) from error
    except RepositoryNotFoundError as error:
        raise ModelNotFoundError(
            f"Hugging Face repository '{reference.repo_id}' does not exist or is private"
        ) from error
    except RevisionNotFoundError as error:
        raise ModelNotFoundError(
            f"Hugging Face repository '{reference.repo_id}' has no revision '{reference.revision}'"
        ) from error
    except RemoteEntryNotFoundError as error:
        raise ModelNotFoundError(
            f"Hugging Face repository '{reference.repo_id}' has no file '{reference.filename}'"
        ) from error
    except HFValidationError as error:
        raise ModelNotFoundError(
            f"'{reference}' is not a valid Hugging Face reference (owner/repo/file.gguf): {error}"
        ) from error
    except HfHubHTTPError as error:
        status = error.response.status_code
        raise ModelUnavailableError(
            f"Hugging Face hub answered HTTP {status} for '{reference}'; retry later, or download "
            "the file elsewhere and pass the local .gguf path"
        ) from error
    except Exception as error:  # the hub is unreachable: offline, DNS, proxy, timeout
        # Another process may have completed the same download meanwhile.
        cached = _cached_path(reference)
        if cached is not None:
            return cached
        raise ModelUnavailableError(
            f"Hugging Face hub is unreachable (offline?) and '{reference}' is not in the local "
            "cache; download it elsewhere and pass the local .gguf path"
        ) from error


def _cached_path(reference: HubReference) -> Path | None:
    try:
        return Path(
            hf_hub_download(
                reference.repo_id,
                reference.filename,
                revision=reference.revision,
                local_files_only=True,
            )
        )
    except (OSError, ValueError):  # LocalEntryNotFoundError is a FileNotFoundError
        return None
