"""Builds a large file from chunks, atomically and checksum-verified, and remembers the result.

A verified file gets a small stamp beside it (`<file>.sha256`: digest, size, mtime), so later
runs trust the file without re-hashing it as long as its size and mtime are unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

_BLOCK_SIZE = 1 << 20


class ChecksumMismatchError(Exception):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"expected sha256 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_BLOCK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def has_valid_stamp(path: Path, expected_sha256: str) -> bool:
    """True if `path` was verified against `expected_sha256` and has not changed since."""
    try:
        stamp = json.loads(stamp_path(path).read_text(encoding="utf-8"))
        stat = path.stat()
    except (OSError, ValueError):
        return False
    return (
        isinstance(stamp, dict)
        and stamp.get("sha256") == expected_sha256
        and stamp.get("size") == stat.st_size
        and stamp.get("mtime_ns") == stat.st_mtime_ns
    )


def write_stamp(path: Path, sha256: str) -> None:
    stat = path.stat()
    stamp = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    _write_atomically(stamp_path(path), json.dumps(stamp).encode("utf-8"))


def ensure_assembled(target: Path, chunks: Sequence[Path], expected_sha256: str) -> Path:
    """Make `target` the verified concatenation of `chunks`, doing as little work as possible.

    Fast path: a valid stamp. Otherwise, under a lock shared with other processes, an existing
    file is re-hashed once (and stamped if good), else rebuilt from the chunks.
    Raises ChecksumMismatchError if the chunks do not add up to `expected_sha256`.
    """
    if has_valid_stamp(target, expected_sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.with_name(target.name + ".lock")):
        if has_valid_stamp(target, expected_sha256):
            return target  # another process finished while we waited for the lock
        if target.is_file() and file_sha256(target) == expected_sha256:
            write_stamp(target, expected_sha256)
            return target
        _assemble(target, chunks, expected_sha256)
        write_stamp(target, expected_sha256)
    return target


def _assemble(target: Path, chunks: Sequence[Path], expected_sha256: str) -> None:
    """Concatenate into a temporary file beside `target`, hashing on the way, then rename."""
    digest = hashlib.sha256()
    descriptor, temporary_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
    )
    temporary = Path(temporary_name)
    try:
        with os.fdopen(descriptor, "wb") as output:
            for chunk in chunks:
                with chunk.open("rb") as source:
                    while block := source.read(_BLOCK_SIZE):
                        digest.update(block)
                        output.write(block)
            output.flush()
            os.fsync(output.fileno())
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise ChecksumMismatchError(expected_sha256, actual)
        temporary.chmod(0o644)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def _write_atomically(path: Path, content: bytes) -> None:
    descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as output:
            output.write(content)
        os.chmod(temporary_name, 0o644)
        os.replace(temporary_name, path)
    finally:
        Path(temporary_name).unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)
