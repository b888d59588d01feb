"""cluster.yaml: where and how to run the models of one EdgeLLM configuration on K3s.

`config` is exactly what `edgellm serve --config` reads (EdgeLLMConfig). Its local `models` become
node workloads on the Raspberry Pis, one per model, and the gateway in the cluster reaches them
through a headless Service per model; `remote_models` (a cloud API) pass through unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgellm.config import EdgeLLMConfig, load_yaml
from edgellm.deploy.runtimes import RUNTIMES, check_source

# K3s ships upstream Kubernetes; the manifests are validated against this version's schemas.
K3S_KUBERNETES_VERSION = "1.34.0"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"
_LABEL = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu_request: str = Field("500m", pattern=_QUANTITY)
    cpu_limit: str | None = Field("2", pattern=_QUANTITY)
    memory_request: str = Field("512Mi", pattern=_QUANTITY)
    memory_limit: str = Field("1Gi", pattern=_QUANTITY, description="OOM-kill above this")

    def render(self) -> dict[str, Any]:
        limits: dict[str, str] = {"memory": self.memory_limit}
        if self.cpu_limit:
            limits["cpu"] = self.cpu_limit
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": limits,
        }


class NodeWorkload(BaseModel):
    """How one local model of `config.models` runs on the Pis."""

    model_config = ConfigDict(extra="forbid")

    runtime: str = Field("edgellm", description="edgellm (edgellm node) or llama-server")
    kind: Literal["Deployment", "DaemonSet"] = Field(
        "Deployment", description="DaemonSet: one replica on every labelled node"
    )
    replicas: int = Field(2, ge=1, description="Deployment only")
    node_labels: dict[str, str] = Field(
        default_factory=dict, description="extra labels the node must carry (e.g. a RAM class)"
    )
    resources: Resources = Field(default_factory=Resources)
    startup_seconds: int = Field(300, ge=10, description="time allowed to load the model")


class GatewayWorkload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    replicas: int = Field(2, ge=1)
    resources: Resources = Field(
        default_factory=lambda: Resources(
            cpu_request="100m", cpu_limit="1", memory_request="128Mi", memory_limit="512Mi"
        )
    )
    host: str | None = Field("edgellm.local", description="Ingress host; None: any host")
    run_on_pis: bool = Field(False, description="also require the Pi label for the gateway")


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = Field("edgellm", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    image: str = Field("ghcr.io/edgellm/edgellm:0.1.0", min_length=1)
    llama_server_image: str = Field(
        "ghcr.io/ggml-org/llama.cpp:server", description="for models with runtime llama-server"
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    kubernetes_version: str = Field(K3S_KUBERNETES_VERSION, pattern=r"^1\.\d+\.\d+$")
    pi_label: str = Field("edgellm.io/pi", pattern=_LABEL, description="label on the Pi nodes")
    pi_label_value: str = "true"
    models_host_path: str | None = Field(
        "/var/lib/edgellm/models", description="GGUF files on each Pi, mounted at /models"
    )
    cloud_secret: str = Field("edgellm-cloud", description="Secret holding api_key_env values")
    gateway: GatewayWorkload = Field(default_factory=GatewayWorkload)
    nodes: dict[str, NodeWorkload] = Field(
        default_factory=dict, description="per model name; models not listed get the defaults"
    )
    config: EdgeLLMConfig = Field(default_factory=EdgeLLMConfig)

    @model_validator(mode="after")
    def _check(self) -> ClusterSpec:
        local = {m.name for m in self.config.models}
        unknown = sorted(set(self.nodes) - local)
        if unknown:
            raise ValueError(f"nodes: {unknown} are not models in config.models")
        for model in self.config.models:
            runtime = self.workload(model.name).runtime
            if runtime not in RUNTIMES:
                raise ValueError(
                    f"nodes.{model.name}.runtime: unknown {runtime!r}; "
                    f"choose from {', '.join(RUNTIMES)}"
                )
            problem = check_source(runtime, model)
            if problem:
                raise ValueError(problem)
        slugs = [slug(m) for m in local]
        if len(set(slugs)) != len(slugs):
            raise ValueError("two model names map to the same Kubernetes name")
        return self

    def workload(self, model: str) -> NodeWorkload:
        return self.nodes.get(model) or NodeWorkload()

    @classmethod
    def from_yaml(cls, path: Path) -> ClusterSpec:
        return load_yaml(cls, path, "cluster spec")


def slug(name: str) -> str:
    """A DNS-1035 label from a model name (`org/Model:Q4` -> `org-model-q4`)."""
    s = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    s = re.sub(r"^[^a-z]+", "", s) or "model"
    return s[:40].rstrip("-")
