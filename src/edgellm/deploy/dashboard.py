"""A Grafana dashboard (JSON model, schemaVersion 39) for gateway and node metrics."""

from __future__ import annotations

from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def _panel(
    pid: int,
    title: str,
    exprs: list[tuple[str, str]],
    unit: str,
    x: int,
    y: int,
    *,
    w: int = 12,
    h: int = 8,
) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": DATASOURCE,
            }
            for i, (expr, legend) in enumerate(exprs)
        ],
    }


def _q(metric: str, q: float, by: str = "model") -> str:
    return (
        f"histogram_quantile({q}, sum by (le, {by}) "
        f"(rate({metric}_bucket{{$sel}}[$__rate_interval])))"
    )


# (title, [(expr, legend)], unit) rows of two; `$sel` is replaced by the namespace filter.
_PANELS: list[tuple[str, list[tuple[str, str]], str]] = [
    (
        "Gateway: requests by answering model",
        [
            (
                "sum by (model) "
                "(rate(edgellm_gateway_routed_requests_total{$sel}[$__rate_interval]))",
                "{{model}}",
            )
        ],
        "reqps",
    ),
    (
        "Gateway: backend attempts by outcome",
        [
            (
                "sum by (backend, outcome) (rate(edgellm_gateway_backend_requests_total{$sel}"
                "[$__rate_interval]))",
                "{{backend}} {{outcome}}",
            )
        ],
        "reqps",
    ),
    (
        "Gateway: time to first token (p50, p95)",
        [
            (_q("edgellm_gateway_time_to_first_token_seconds", 0.5), "p50 {{model}}"),
            (_q("edgellm_gateway_time_to_first_token_seconds", 0.95), "p95 {{model}}"),
        ],
        "s",
    ),
    (
        "Gateway: fallbacks and overhead",
        [
            (
                "sum by (model) (rate(edgellm_gateway_fallbacks_total{$sel}[$__rate_interval]))",
                "fallbacks {{model}}",
            ),
            (
                "histogram_quantile(0.95, sum by (le) (rate(edgellm_gateway_overhead_seconds_bucket"
                "{$sel}[$__rate_interval])))",
                "overhead p95 (s)",
            ),
        ],
        "short",
    ),
    (
        "Nodes: requests by status",
        [
            (
                'sum by (model, status) (rate(edgellm_requests_total{component="node",$sel}'
                "[$__rate_interval]))",
                "{{model}} {{status}}",
            )
        ],
        "reqps",
    ),
    (
        "Nodes: time to first token (p50, p95)",
        [
            (_q("edgellm_time_to_first_token_seconds", 0.5), "p50 {{model}}"),
            (_q("edgellm_time_to_first_token_seconds", 0.95), "p95 {{model}}"),
        ],
        "s",
    ),
    (
        "Nodes: decode speed per pod (median)",
        [(_q("edgellm_decode_tokens_per_second", 0.5, "pod"), "{{pod}}")],
        "none",
    ),
    (
        "Nodes: generated tokens per second",
        [
            (
                "sum by (pod) (rate(edgellm_generation_tokens_total{$sel}[$__rate_interval]))",
                "{{pod}}",
            )
        ],
        "none",
    ),
    (
        "Nodes: queue depth and running requests",
        [
            ("sum by (pod) (edgellm_queue_depth{$sel})", "queued {{pod}}"),
            ("sum by (pod) (edgellm_requests_running{$sel})", "running {{pod}}"),
        ],
        "short",
    ),
    ("Nodes: queue wait (p95)", [(_q("edgellm_queue_wait_seconds", 0.95, "pod"), "{{pod}}")], "s"),
    ("Processes: CPU", [("edgellm_process_cpu_percent{$sel}", "{{component}} {{pod}}")], "percent"),
    (
        "Processes: resident memory",
        [("edgellm_process_resident_memory_bytes{$sel}", "{{component}} {{pod}}")],
        "bytes",
    ),
]


def grafana_dashboard() -> dict[str, Any]:
    panels = []
    for i, (title, exprs, unit) in enumerate(_PANELS):
        exprs = [
            (
                e.replace("{$sel}", '{namespace=~"$namespace"}').replace(
                    ",$sel}", ',namespace=~"$namespace"}'
                ),
                legend,
            )
            for e, legend in exprs
        ]
        panels.append(_panel(i + 1, title, exprs, unit, x=(i % 2) * 12, y=(i // 2) * 8))
    return {
        "uid": "edgellm-overview",
        "title": "EdgeLLM: gateway and nodes",
        "tags": ["edgellm", "llm", "edge"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "10s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                },
                {
                    "name": "namespace",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": "label_values(edgellm_requests_total, namespace)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                    "label": "namespace",
                },
            ]
        },
        "panels": panels,
    }
