"""`edgellm deploy render`: Kubernetes / K3s manifests from a cluster.yaml."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from edgellm.errors import EdgeLLMError

app = typer.Typer(help="Deploy on Kubernetes / K3s.", no_args_is_help=True)
err = Console(stderr=True)


@app.command()
def render(
    config: Path = typer.Option(..., "--config", "-c", help="cluster.yaml (ClusterSpec)"),
    out_dir: Path | None = typer.Option(
        None, "--out", "-o", help="write one file per component here; default: stdout"
    ),
    validate: bool = typer.Option(
        False, help="check every object against the Kubernetes schemas (kubernetes-validate)"
    ),
) -> None:
    """Render the node workloads, headless Services, gateway, Ingress and monitoring."""
    from edgellm.deploy import render as r
    from edgellm.deploy.spec import ClusterSpec

    try:
        spec = ClusterSpec.from_yaml(config)
    except EdgeLLMError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    files = r.render(spec)
    if validate:
        from edgellm.deploy.validate import validate as check

        problems = [
            p for objs in files.values() for o in objs if (p := check(o, spec.kubernetes_version))
        ]
        for p in problems:
            err.print(f"[red]invalid:[/red] {p}")
        if problems:
            raise typer.Exit(1)
        count = sum(len(objs) for objs in files.values())
        err.print(f"{count} objects valid for Kubernetes {spec.kubernetes_version}")
    head = r.header(str(config))
    if out_dir is None:
        typer.echo(head + "---\n".join(r.to_yaml(objs) for objs in files.values()), nl=False)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, objs in files.items():
        (out_dir / name).write_text(head + r.to_yaml(objs))
        err.print(f"wrote {out_dir / name}")
    for stale in out_dir.glob("*.yaml"):
        # Rendered earlier for a model no longer configured.
        ours = r.safe_file_name(stale.name) and stale.read_text().startswith(head[:30])
        if stale.name not in files and ours:
            stale.unlink()
            err.print(f"removed {stale}")


@app.command()
def assets(
    out_dir: Path = typer.Option(Path("deploy"), "--out", "-o", help="the deploy/ directory"),
) -> None:
    """Write the Prometheus scrape config and Grafana dashboard used by deploy/compose.yaml."""
    from edgellm.deploy.assets import compose_assets

    for rel, text in compose_assets().items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        err.print(f"wrote {path}")
