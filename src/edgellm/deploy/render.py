"""ClusterSpec -> Kubernetes objects (plain dicts), one list per file of the rendered output."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import yaml

from edgellm.config import EdgeLLMConfig, HttpBackendConfig, ModelConfig, RemoteModelConfig
from edgellm.deploy.dashboard import grafana_dashboard
from edgellm.deploy.prometheus import scrape_config
from edgellm.deploy.runtimes import RUNTIMES
from edgellm.deploy.spec import ClusterSpec, slug

Obj = dict[str, Any]
PORT = 8080
PART_OF = "edgellm"
CONFIG_DIR = "/etc/edgellm"


def node_name(model: str) -> str:
    return f"edgellm-node-{slug(model)}"


def service_dns(spec: ClusterSpec, model: str) -> str:
    return f"{node_name(model)}.{spec.namespace}.svc.cluster.local"


def gateway_config(spec: ClusterSpec) -> EdgeLLMConfig:
    """The gateway's view: each local model is now reached over HTTP through its headless Service,
    whose DNS name lists one address per ready pod; remote (cloud) models are kept as they are."""
    cfg = spec.config
    resolve_s = min(cfg.router.health_interval_s, 10.0)
    via_dns = [
        RemoteModelConfig(
            name=m.name,
            aliases=m.aliases,
            tier=m.tier,
            cost_per_1k_tokens=m.cost_per_1k_tokens,
            context_length=m.context_length or m.engine.n_ctx,
            backends=[
                HttpBackendConfig(
                    dns=service_dns(spec, m.name), port=PORT, resolve_interval_s=resolve_s
                )
            ],
        )
        for m in cfg.models
    ]
    server = cfg.server.model_copy(update={"host": "0.0.0.0", "port": PORT})
    return cfg.model_copy(
        update={"server": server, "models": [], "remote_models": via_dns + cfg.remote_models}
    )


def config_yaml(cfg: EdgeLLMConfig) -> str:
    # Everything, defaults included: the ConfigMap shows exactly what the gateway runs with.
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


# --- building blocks ---------------------------------------------------------------------------


def _meta(spec: ClusterSpec, name: str, labels: dict[str, str] | None = None, **extra: Any) -> Obj:
    meta: Obj = {
        "name": name,
        "namespace": spec.namespace,
        "labels": {"app.kubernetes.io/part-of": PART_OF, **(labels or {})},
    }
    meta.update(extra)
    return meta


def _labels(component: str, instance: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": f"edgellm-{component}",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
    }


def _pod_labels(labels: dict[str, str]) -> dict[str, str]:
    # part-of is what the Prometheus scrape configuration keeps.
    return {"app.kubernetes.io/part-of": PART_OF, **labels}


def _probe(path: str, period: int, failures: int, timeout: int = 3) -> Obj:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def _security() -> tuple[Obj, Obj]:
    pod = {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod, container


def _pi_affinity(spec: ClusterSpec, extra: dict[str, str], instance: str) -> Obj:
    exprs = [{"key": spec.pi_label, "operator": "In", "values": [spec.pi_label_value]}]
    exprs += [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(extra.items())]
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": exprs}]
            }
        },
        **_spread({"app.kubernetes.io/instance": instance}),
    }


def _spread(match_labels: dict[str, str]) -> Obj:
    """Replicas of one workload on different machines, where they fit: one Pi failing leaves
    the others serving."""
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": match_labels},
                    },
                }
            ]
        },
    }


# --- node workloads ----------------------------------------------------------------------------


def node_objects(spec: ClusterSpec, model: ModelConfig) -> list[Obj]:
    work = spec.workload(model.name)
    name = node_name(model.name)
    labels = _labels("node", name) | {"edgellm.io/model": slug(model.name)}
    selector = {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": "node"}
    pod_sec, ctr_sec = _security()
    mounts: list[Obj] = []
    volumes: list[Obj] = []
    if spec.models_host_path:
        mounts.append({"name": "models", "mountPath": "/models", "readOnly": True})
        volumes.append(
            {
                "name": "models",
                "hostPath": {"path": spec.models_host_path, "type": "DirectoryOrCreate"},
            }
        )
    container: Obj = {
        "name": "node",
        **RUNTIMES[work.runtime](spec, model, work),
        "imagePullPolicy": spec.image_pull_policy,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "resources": work.resources.render(),
        # /health is 503 while the model loads: the startup probe allows for that, readiness
        # takes the pod out of the headless Service's address list when it stops answering.
        "startupProbe": _probe("/health", 5, max(1, work.startup_seconds // 5)),
        "readinessProbe": _probe("/health", 5, 2),
        "livenessProbe": _probe("/health", 20, 3, timeout=5),
        "securityContext": ctr_sec,
        "volumeMounts": mounts,
    }
    pod: Obj = {
        "metadata": {"labels": _pod_labels(labels), "annotations": _scrape_annotations()},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": pod_sec,
            "affinity": _pi_affinity(spec, work.node_labels, name),
            "terminationGracePeriodSeconds": 30,
            "containers": [container],
            "volumes": volumes,
        },
    }
    workload_spec: Obj = {}
    if work.kind == "Deployment":
        workload_spec["replicas"] = work.replicas
        workload_spec["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": 0 if work.replicas > 1 else 1, "maxSurge": 1},
        }
    workload: Obj = {
        "apiVersion": "apps/v1",
        "kind": work.kind,
        "metadata": _meta(spec, name, labels),
        "spec": workload_spec | {"selector": {"matchLabels": selector}, "template": pod},
    }
    service: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, name, labels),
        "spec": {
            "clusterIP": "None",  # headless: DNS returns one A record per ready pod
            "selector": selector,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    return [workload, service, _pdb(spec, name, labels, selector, work.kind, work.replicas)]


def _pdb(
    spec: ClusterSpec,
    name: str,
    labels: dict[str, str],
    selector: dict[str, str],
    kind: str,
    replicas: int,
) -> Obj:
    # Keep one replica through voluntary disruptions (drains, upgrades); a single replica may go,
    # or no Pi could ever be drained.
    budget: Obj = (
        {"minAvailable": 1} if kind == "Deployment" and replicas > 1 else {"maxUnavailable": 1}
    )
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(spec, name, labels),
        "spec": budget | {"selector": {"matchLabels": selector}},
    }


def _scrape_annotations() -> dict[str, str]:
    return {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(PORT),
        "prometheus.io/path": "/metrics",
    }


# --- gateway -----------------------------------------------------------------------------------


def gateway_objects(spec: ClusterSpec) -> list[Obj]:
    gw = spec.gateway
    name = "edgellm-gateway"
    labels = _labels("gateway", name)
    selector = {"app.kubernetes.io/instance": name, "app.kubernetes.io/component": "gateway"}
    text = config_yaml(gateway_config(spec))
    config_map: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, name, labels),
        "data": {"gateway.yaml": text},
    }
    keys = sorted(
        {b.api_key_env for m in spec.config.remote_models for b in m.backends if b.api_key_env}
    )
    env = [
        {
            "name": key,
            "valueFrom": {
                "secretKeyRef": {"name": spec.cloud_secret, "key": key, "optional": True}
            },
        }
        for key in keys
    ]
    pod_sec, ctr_sec = _security()
    container: Obj = {
        "name": "gateway",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["edgellm"],
        "args": [
            "serve",
            "--config",
            f"{CONFIG_DIR}/gateway.yaml",
            "--host",
            "0.0.0.0",
            "--port",
            str(PORT),
        ],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "resources": gw.resources.render(),
        "readinessProbe": _probe("/health", 5, 2),
        "livenessProbe": _probe("/health", 20, 3, timeout=5),
        "securityContext": ctr_sec | {"readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    affinity = _pi_affinity(spec, {}, name) if gw.run_on_pis else _spread(selector)
    checksum = hashlib.sha256(text.encode()).hexdigest()[:16]
    deployment: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(spec, name, labels),
        "spec": {
            "replicas": gw.replicas,
            "selector": {"matchLabels": selector},
            "template": {
                # A changed config rolls the gateway pods.
                "metadata": {
                    "labels": _pod_labels(labels),
                    "annotations": _scrape_annotations() | {"edgellm.io/config-sha256": checksum},
                },
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_sec,
                    "affinity": affinity,
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": name}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }
    service: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(spec, name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    rule: Obj = {
        "http": {
            "paths": [
                {
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": name, "port": {"name": "http"}}},
                }
            ]
        }
    }
    if gw.host:
        rule["host"] = gw.host
    ingress: Obj = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": _meta(
            spec,
            name,
            labels,
            annotations={"traefik.ingress.kubernetes.io/router.entrypoints": "web"},
        ),
        "spec": {"ingressClassName": "traefik", "rules": [rule]},
    }
    pdb = _pdb(spec, name, labels, selector, "Deployment", gw.replicas)
    return [config_map, deployment, service, ingress, pdb]


# --- monitoring and the whole set --------------------------------------------------------------


def monitoring_objects(spec: ClusterSpec) -> list[Obj]:
    labels = _labels("monitoring", "edgellm-monitoring")
    prom: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, "edgellm-prometheus", labels),
        "data": {
            "prometheus.yml": yaml.safe_dump(scrape_config([spec.namespace]), sort_keys=False)
        },
    }
    # The label is what Grafana's dashboard sidecar (kube-prometheus-stack, grafana chart) finds.
    dash: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(spec, "edgellm-grafana-dashboard", labels | {"grafana_dashboard": "1"}),
        "data": {"edgellm.json": json.dumps(grafana_dashboard(), indent=1)},
    }
    return [prom, dash]


def render(spec: ClusterSpec) -> dict[str, list[Obj]]:
    """File name -> the objects in it, in the order `kubectl apply -f DIR` should create them."""
    files: dict[str, list[Obj]] = {
        "00-namespace.yaml": [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": spec.namespace,
                    "labels": {"app.kubernetes.io/part-of": PART_OF},
                },
            }
        ],
    }
    for model in spec.config.models:
        files[f"10-{node_name(model.name)}.yaml"] = node_objects(spec, model)
    files["20-edgellm-gateway.yaml"] = gateway_objects(spec)
    files["30-monitoring.yaml"] = monitoring_objects(spec)
    return files


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # no &id001 anchors: kubectl users read these files


def to_yaml(objects: list[Obj]) -> str:
    return "---\n".join(yaml.dump(o, Dumper=_Dumper, sort_keys=False) for o in objects)


def header(source: str) -> str:
    return f"# Rendered by `edgellm deploy render --config {source}`; do not edit by hand.\n"


def safe_file_name(name: str) -> bool:
    return re.fullmatch(r"[0-9]{2}-[a-z0-9-]+\.yaml", name) is not None
