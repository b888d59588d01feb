from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edgellm.models import assembly
from edgellm.models.assembly import (
    ChecksumMismatchError,
    ensure_assembled,
    has_valid_stamp,
    stamp_path,
)

CHUNK_CONTENTS = [b"first chunk|", b"second chunk|", b"last"]
WHOLE = b"".join(CHUNK_CONTENTS)
WHOLE_SHA256 = hashlib.sha256(WHOLE).hexdigest()


@pytest.fixture
def chunks(tmp_path: Path) -> list[Path]:
    paths = []
    for index, content in enumerate(CHUNK_CONTENTS):
        path = tmp_path / "chunks" / f"model.part{index:02d}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(content)
        paths.append(path)
    return paths


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "model.gguf"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


def test_assembles_chunks_in_order_and_stamps(chunks: list[Path], target: Path) -> None:
    assert ensure_assembled(target, chunks, WHOLE_SHA256) == target

    assert target.read_bytes() == WHOLE
    stamp = json.loads(stamp_path(target).read_text())
    assert stamp == {
        "sha256": WHOLE_SHA256,
        "size": len(WHOLE),
        "mtime_ns": target.stat().st_mtime_ns,
    }
    assert has_valid_stamp(target, WHOLE_SHA256)
    assert _leftovers(target.parent) == []


def test_stamped_file_is_trusted_without_hashing(
    chunks: list[Path], target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_assembled(target, chunks, WHOLE_SHA256)

    def fail(_: Path) -> str:
        raise AssertionError("a stamped file must not be re-hashed")

    monkeypatch.setattr(assembly, "file_sha256", fail)
    for chunk in chunks:
        chunk.unlink()

    assert ensure_assembled(target, chunks, WHOLE_SHA256) == target


def test_checksum_mismatch_leaves_nothing_behind(chunks: list[Path], target: Path) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()

    with pytest.raises(ChecksumMismatchError) as caught:
        ensure_assembled(target, chunks, wrong)

    assert caught.value.actual == WHOLE_SHA256
    assert not target.exists()
    assert not stamp_path(target).exists()
    assert _leftovers(target.parent) == []


def test_interrupted_assembly_leaves_no_partial_model(chunks: list[Path], target: Path) -> None:
    chunks[-1].unlink()  # fails after the first chunks were written

    with pytest.raises(FileNotFoundError):
        ensure_assembled(target, chunks, WHOLE_SHA256)

    assert not target.exists()
    assert _leftovers(target.parent) == []


def test_good_unstamped_file_is_hashed_once_not_rewritten(chunks: list[Path], target: Path) -> None:
    target.parent.mkdir(parents=True)
    target.write_bytes(WHOLE)
    inode = target.stat().st_ino

    ensure_assembled(target, chunks, WHOLE_SHA256)

    assert target.stat().st_ino == inode
    assert has_valid_stamp(target, WHOLE_SHA256)


def test_changed_file_is_rebuilt(chunks: list[Path], target: Path) -> None:
    ensure_assembled(target, chunks, WHOLE_SHA256)
    target.write_bytes(b"corrupted")

    assert not has_valid_stamp(target, WHOLE_SHA256)
    ensure_assembled(target, chunks, WHOLE_SHA256)

    assert target.read_bytes() == WHOLE
    assert has_valid_stamp(target, WHOLE_SHA256)


def test_stamp_is_invalidated_by_mtime_or_other_hash(chunks: list[Path], target: Path) -> None:
    ensure_assembled(target, chunks, WHOLE_SHA256)

    assert not has_valid_stamp(target, "0" * 64)
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert not has_valid_stamp(target, WHOLE_SHA256)


def test_unreadable_stamp_is_not_trusted(chunks: list[Path], target: Path) -> None:
    ensure_assembled(target, chunks, WHOLE_SHA256)
    stamp_path(target).write_text("not json")

    assert not has_valid_stamp(target, WHOLE_SHA256)


def test_concurrent_callers_assemble_once(
    chunks: list[Path], target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assemblies: list[Path] = []
    real_assemble = assembly._assemble

    def counting_assemble(path: Path, parts: Sequence[Path], sha256: str) -> None:
        assemblies.append(path)
        time.sleep(0.05)  # hold the lock long enough for the other callers to queue up
        real_assemble(path, parts, sha256)

    monkeypatch.setattr(assembly, "_assemble", counting_assemble)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: ensure_assembled(target, chunks, WHOLE_SHA256), range(4)))

    assert results == [target] * 4
    assert assemblies == [target]
    assert target.read_bytes() == WHOLE
