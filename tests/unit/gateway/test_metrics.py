"""Gateway metrics recorded on the request path are applied in batches: every update is in the
next scrape, and a long run without scrapes does not pile them up."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from edgellm.gateway import metrics as gateway_metrics
from edgellm.gateway.metrics import GatewayMetrics


def _samples(m: GatewayMetrics) -> dict[str, float]:
    out = {}
    for line in generate_latest(m.registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_a_scrape_sees_every_update_made_before_it() -> None:
    m = GatewayMetrics()
    m.count_attempt("small", "http://a/v1", "ok")
    m.count_attempt("small", "http://a/v1", "ok")
    m.count_attempt("small", "http://b/v1", "error")
    m.count_routed("explicit", "small")
    m.count_escalation("cascade", "small", "cloud")
    m.count_degraded("cascade", "small", "down")
    m.observe_overhead(0.0003)
    m.observe_ttft("small", 0.2)
    m.observe_e2e("small", 3.0)
    got = _samples(m)
    ok = 'edgellm_gateway_backend_requests_total{backend="http://a/v1",model="small",outcome="ok"}'
    assert got[ok] == 2.0
    assert got[ok.replace("a/v1", "b/v1").replace('"ok"', '"error"')] == 1.0
    assert got['edgellm_gateway_routed_requests_total{model="small",policy="explicit"}'] == 1.0
    escalated = 'edgellm_gateway_escalations_total{policy="cascade",source="small",target="cloud"}'
    assert got[escalated] == 1.0
    degraded = 'model="small",policy="cascade",reason="down"'
    assert got["edgellm_gateway_degraded_answers_total{" + degraded + "}"] == 1.0
    assert got['edgellm_gateway_overhead_seconds_bucket{le="0.0005"}'] == 1.0
    assert got['edgellm_gateway_overhead_seconds_bucket{le="0.00025"}'] == 0.0
    assert got['edgellm_gateway_time_to_first_token_seconds_count{model="small"}'] == 1.0
    assert got['edgellm_gateway_e2e_latency_seconds_sum{model="small"}'] == 3.0
    m.observe_e2e("small", 1.0)  # after a scrape: in the next one
    assert _samples(m)['edgellm_gateway_e2e_latency_seconds_sum{model="small"}'] == 4.0


def test_updates_are_applied_without_a_scrape_once_enough_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway_metrics, "FOLD_EVERY", 10)
    m = GatewayMetrics()
    for _ in range(25):
        m.count_routed("rules", "large")
    assert len(m._pending) == 5  # two batches of 10 applied, 5 waiting
    assert _samples(m)['edgellm_gateway_routed_requests_total{model="large",policy="rules"}'] == 25
    assert m._pending == []
