"""What a testbed looks like: edge nodes on one bridge, an optional cloud behind a shaped link."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgellm.config import EngineConfig, ModelConfig, load_yaml
from edgellm.deploy.launch import served_model

# Linux interface names hold at most 15 characters: "<prefix>-<node>" must fit.
PREFIX_PATTERN = r"^[a-z][a-z0-9]{1,5}$"
NODE_PATTERN = r"^[a-z][a-z0-9]{0,7}$"
NODE_PORT = 8080


class NodeSpec(BaseModel):
    """One EdgeLLM node: its own network namespace, address, CPU share and memory cap."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NODE_PATTERN)
    model: str = Field("smollm2-135m-instruct", description="bundled name or path to a .gguf")
    served_name: str | None = Field(None, description="name clients use (default: model)")
    cpus: float | None = Field(0.5, gt=0, description="CPU share in cores (cgroup cpu quota)")
    cpuset: list[int] | None = Field(None, description="pin to these CPUs (taskset)")
    memory_mb: int | None = Field(768, ge=64, description="memory cap (cgroup memory limit)")
    threads: int = Field(1, ge=1, description="llama.cpp threads")
    ctx: int = Field(1024, ge=128)
    parallel: int = Field(1, ge=1, le=64, description="slots decoded together")
    max_queue: int = Field(32, ge=0)
    engine: dict[str, Any] = Field(
        default_factory=dict,
        description="other EngineConfig fields (n_batch, flash_attn, kv_unified, ...)",
    )

    @model_validator(mode="after")
    def _check_engine(self) -> NodeSpec:
        self.served()  # an unknown or invalid engine field fails here, not at start-up
        return self

    def served(self) -> ModelConfig:
        """The model this node serves, as `edgellm node` gets it (edgellm.deploy.launch)."""
        shorthand = {"n_threads", "n_ctx", "parallel", "max_queue"} & set(self.engine)
        if shorthand:
            raise ValueError(
                f"engine: set {sorted(shorthand)} with threads, ctx, parallel, max_queue"
            )
        engine = EngineConfig.model_validate(
            self.engine
            | {
                "n_threads": self.threads,
                "n_ctx": self.ctx,
                "parallel": self.parallel,
                "max_queue": self.max_queue,
            }
        )
        return served_model(self.model, name=self.served_name or self.model, engine=engine)


class LinkSpec(BaseModel):
    """The WAN link to the cloud; delay and jitter apply to each direction."""

    model_config = ConfigDict(extra="forbid")

    delay_ms: float = Field(40.0, ge=0)
    jitter_ms: float = Field(5.0, ge=0)
    loss_pct: float = Field(0.0, ge=0, le=50)
    rate_mbit: float | None = Field(50.0, gt=0)


class CloudSpec(NodeSpec):
    name: str = Field("cloud", pattern=NODE_PATTERN)
    model: str = "gemma3-270m"
    cpus: float | None = None
    memory_mb: int | None = None
    link: LinkSpec = Field(default_factory=LinkSpec)


def _default_nodes() -> list[NodeSpec]:
    return [NodeSpec(name=f"n{i}") for i in (1, 2, 3)]


class TestbedSpec(BaseModel):
    """`edgellm testbed up --config FILE` reads this; every field has a working default."""

    model_config = ConfigDict(extra="forbid")
    __test__ = False  # not a pytest class, despite the name

    prefix: str = Field("eltb", pattern=PREFIX_PATTERN, description="names of everything created")
    edge_subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("10.200.0.0/24")
    cloud_subnet: ipaddress.IPv4Network = ipaddress.IPv4Network("10.200.1.0/30")
    nodes: list[NodeSpec] = Field(default_factory=_default_nodes, min_length=1, max_length=200)
    cloud: CloudSpec | None = Field(default_factory=CloudSpec)
    startup_timeout_s: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> TestbedSpec:
        for net in (self.edge_subnet, self.cloud_subnet):
            if not net.is_private:
                raise ValueError(f"{net} is not a private network")
        if self.edge_subnet.overlaps(self.cloud_subnet):
            raise ValueError("edge_subnet and cloud_subnet overlap")
        if self.edge_subnet.num_addresses < len(self.nodes) + 12:
            raise ValueError(f"edge_subnet {self.edge_subnet} is too small for the nodes")
        if self.cloud_subnet.num_addresses < 4:
            raise ValueError("cloud_subnet needs at least a /30")
        names = [n.name for n in self.nodes] + ([self.cloud.name] if self.cloud else [])
        if len(set(names)) != len(names) or "br" in names:
            raise ValueError("node names must be unique and not 'br'")
        return self

    # Addresses: the bridge takes .1 of the edge subnet, node i takes .11+i; on the cloud link
    # the root namespace takes .1 and the cloud .2.
    def bridge_ip(self) -> str:
        return str(self.edge_subnet.network_address + 1)

    def node_ip(self, index: int) -> str:
        return str(self.edge_subnet.network_address + 11 + index)

    def cloud_host_ip(self) -> str:
        return str(self.cloud_subnet.network_address + 1)

    def cloud_ip(self) -> str:
        return str(self.cloud_subnet.network_address + 2)

    @classmethod
    def from_yaml(cls, path: Path) -> TestbedSpec:
        return load_yaml(cls, path, "testbed config")
