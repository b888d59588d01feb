"""`edgellm testbed up | down`: an emulated edge cluster on this machine (needs root)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from edgellm.config import format_validation_error
from edgellm.errors import EdgeLLMError

app = typer.Typer(
    help="Emulate an edge cluster on one Linux host with network namespaces.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)


@app.command()
def up(
    config: Path | None = typer.Option(None, "--config", "-c", help="testbed YAML (TestbedSpec)"),
    nodes: int | None = typer.Option(None, help="number of edge nodes (overrides the config)"),
    prefix: str | None = typer.Option(None, help="name prefix of everything created"),
    shaper: str = typer.Option("auto", help="cloud link shaping: auto, netem or tbf+proxy"),
    no_cloud: bool = typer.Option(False, "--no-cloud", help="no cloud node"),
    duration: float = typer.Option(0, help="seconds to stay up; 0 = until Ctrl-C"),
    state: Path | None = typer.Option(None, help="write the node URLs here as JSON"),
    log_dir: Path | None = typer.Option(
        None, help="node and gateway logs (default: a new temp dir)"
    ),
    gateway_port: int = typer.Option(
        0, help="also run the gateway (edgellm serve) on 127.0.0.1:PORT in front of the nodes"
    ),
) -> None:
    """Start the nodes and the shaped cloud link, print their addresses, stay up, clean up."""
    from edgellm.testbed.cluster import Testbed
    from edgellm.testbed.host import TestbedError
    from edgellm.testbed.spec import TestbedSpec

    try:
        spec = TestbedSpec.from_yaml(config) if config else TestbedSpec()
    except EdgeLLMError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    data = spec.model_dump()
    if nodes is not None:
        data["nodes"] = [data["nodes"][0] | {"name": f"n{i + 1}"} for i in range(nodes)]
    if prefix is not None:
        data["prefix"] = prefix
    if no_cloud:
        data["cloud"] = None
    try:
        spec = TestbedSpec.model_validate(data)
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {format_validation_error(exc)}")
        raise typer.Exit(1) from None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    testbed = Testbed(spec, shaper=shaper, log_dir=log_dir)
    try:
        with testbed, contextlib.ExitStack() as stack:
            info = testbed.describe()
            if gateway_port:
                from edgellm.testbed.gateway import (
                    GatewayProcess,
                    default_config,
                    edge_service_name,
                )

                testbed.set_service(edge_service_name(testbed), list(testbed.nodes))
                gateway = GatewayProcess(testbed, default_config(testbed), port=gateway_port)
                stack.enter_context(gateway)
                info["gateway"] = {"url": gateway.url, "config": str(gateway.config_path)}
                err.print(f"gateway on {gateway.url} (config {gateway.config_path})")
            _print(info)
            if state is not None:
                state.write_text(json.dumps(info, indent=2))
            err.print("up; Ctrl-C (or `edgellm testbed down`) tears it down")
            deadline = time.monotonic() + duration if duration > 0 else None
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.5)
    except TestbedError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    err.print("torn down")


@app.command()
def down(prefix: str = typer.Option("eltb", help="prefix given to `testbed up`")) -> None:
    """Remove whatever a testbed with this prefix left behind (namespaces, links, cgroups)."""
    from edgellm.testbed.cluster import teardown
    from edgellm.testbed.host import unavailable_reason

    reason = unavailable_reason()
    if reason:
        err.print(f"[red]error:[/red] {reason}")
        raise typer.Exit(1)
    removed = teardown(prefix)
    for item in removed:
        out.print(f"removed {item}")
    if not removed:
        out.print(f"nothing named {prefix}-* was left")


def _print(info: dict[str, object]) -> None:
    table = Table(
        title=f"testbed {info['prefix']} (link shaper: {info['shaper']}, "
        f"limits: {info['cgroups']}, logs: {info['log_dir']})"
    )
    for col in ("node", "url", "model", "cpus", "memory MB"):
        table.add_column(col)
    nodes = info["nodes"]
    assert isinstance(nodes, dict)
    for name, node in nodes.items():
        table.add_row(name, node["url"], node["model"], str(node["cpus"]), str(node["memory_mb"]))
    cloud = info["cloud"]
    if isinstance(cloud, dict):
        table.add_row("cloud", cloud["url"], cloud["model"], "-", "-")
    out.print(table)
