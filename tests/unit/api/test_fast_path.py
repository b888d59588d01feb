"""The plain-ASGI fast path for chat and text completions (`api.fast_path.FastApp`)."""

from __future__ import annotations

from typing import Any

import pytest


def test_telemetry_check_is_redone_only_when_opentelemetry_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import opentelemetry.trace as otel_trace

    from edgellm.api.fast_path import FastApp

    app = FastApp()
    telemetry: Any = app._native_telemetry  # type: ignore[attr-defined]
    real = telemetry.enabled
    calls: list[bool] = []

    def enabled() -> bool:
        calls.append(real())
        return calls[-1]

    monkeypatch.setattr(telemetry, "enabled", enabled)
    assert not app._telemetry_on()
    assert not app._telemetry_on()
    assert calls == [False]  # asked once while nothing is configured

    class Provider(otel_trace.NoOpTracerProvider):  # configured: not one of OTel's defaults
        pass

    monkeypatch.setattr(otel_trace, "_TRACER_PROVIDER", Provider())
    assert app._telemetry_on()  # a provider set later is seen at the next request
    assert app._telemetry_on()
    assert calls == [False, True, True]
