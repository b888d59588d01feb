"""A rule's state in a small JSON file, replaced atomically so a crash leaves the old or the
new file, never half of one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

VERSION = 1


def save_state(path: Path, kind: str, state: dict[str, Any]) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"version": VERSION, "kind": kind, "state": state}, separators=(",", ":"))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_state(path: Path, kind: str) -> dict[str, Any] | None:
    """The state saved for a rule of this kind, or None (no file, another kind, unreadable: the
    rule starts afresh and the reason is logged)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("threshold state %s is unreadable (%s); starting afresh", path, exc)
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        log.warning("threshold state %s has an unknown layout; starting afresh", path)
        return None
    if data.get("kind") != kind:
        log.warning("threshold state %s is of a %s rule, not %s; starting afresh",
                    path, data.get("kind"), kind)  # fmt: skip
        return None
    state = data.get("state")
    return state if isinstance(state, dict) else None
