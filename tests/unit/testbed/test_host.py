"""Why a host cannot run the testbed: the reason tests/cluster prints when it skips."""

from __future__ import annotations

import pytest

from edgellm.testbed import host


def test_not_root_is_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    reason = host.unavailable_reason()
    assert reason is not None and "root" in reason


def test_missing_iproute2_is_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)
    monkeypatch.setattr(host.shutil, "which", lambda tool: None)
    reason = host.unavailable_reason()
    assert reason is not None and "iproute2" in reason
