"""Prometheus scrape configuration for the gateway and node pods (and for compose hosts)."""

from __future__ import annotations

from typing import Any


def scrape_config(namespaces: list[str], interval: str = "15s") -> dict[str, Any]:
    """Pods annotated `prometheus.io/scrape: "true"` in these namespaces, labelled by component
    (gateway, node) and model; works with any Prometheus that has in-cluster read access to pods."""
    relabel: list[dict[str, Any]] = [
        {
            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"],
            "action": "keep",
            "regex": "true",
        },
        {
            "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_part_of"],
            "action": "keep",
            "regex": "edgellm",
        },
        {
            "source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_path"],
            "action": "replace",
            "target_label": "__metrics_path__",
            "regex": "(.+)",
        },
        {
            "source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
            "action": "replace",
            "regex": r"([^:]+)(?::\d+)?;(\d+)",
            "replacement": "$1:$2",
            "target_label": "__address__",
        },
        {
            "source_labels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
            "target_label": "component",
        },
        {
            "source_labels": ["__meta_kubernetes_pod_label_edgellm_io_model"],
            "target_label": "deployment_model",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_node_name"], "target_label": "node"},
    ]
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "edgellm",
                "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": namespaces}}],
                "relabel_configs": relabel,
            }
        ],
    }


def static_scrape_config(targets: dict[str, list[str]], interval: str = "5s") -> dict[str, Any]:
    """For one host (compose): component name -> host:port targets."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "scrape_configs": [
            {
                "job_name": "edgellm",
                "static_configs": [
                    {"targets": hosts, "labels": {"component": component}}
                    for component, hosts in targets.items()
                ],
            },
        ],
    }
