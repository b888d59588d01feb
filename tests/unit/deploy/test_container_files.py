"""deploy/Dockerfile and deploy/compose.yaml cannot be built or run here (no Docker): check what
can be checked offline - structure, the files they copy and mount, and that every command line
they run is accepted by the real `edgellm` CLI."""

from __future__ import annotations

import fnmatch
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgellm.config import EdgeLLMConfig
from edgellm.deploy.assets import compose_assets
from tests.unit.deploy.cli_args import check_cli_args

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return out


def _stages(instructions: list[tuple[str, str]]) -> list[tuple[str, list[tuple[str, str]]]]:
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for word, rest in instructions:
        if word == "FROM":
            parts = rest.split()
            assert len(parts) == 3 and parts[1].upper() == "AS", f"unnamed stage: FROM {rest}"
            stages.append((parts[2], []))
        elif stages:
            stages[-1][1].append((word, rest))
    return stages


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, list[tuple[str, str]]]]:
    return _stages(_instructions(DEPLOY / "Dockerfile"))


def test_dockerfile_is_multi_stage_and_runs_as_non_root(
    dockerfile: list[tuple[str, list[tuple[str, str]]]],
) -> None:
    names = [name for name, _ in dockerfile]
    assert names[-1] == "runtime" and "build" in names
    runtime = dict(dockerfile)["runtime"]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert ("EXPOSE", "8080") in runtime
    health = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0]
    # Nothing from the build toolchain reaches the runtime image.
    assert not any("build-essential" in rest for word, rest in runtime if word == "RUN")


def test_dockerfile_copies_only_what_exists_and_is_not_ignored(
    dockerfile: list[tuple[str, list[tuple[str, str]]]],
) -> None:
    ignore = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = {name for name, _ in dockerfile}
    for _, body in dockerfile:
        for word, rest in body:
            if word != "COPY":
                continue
            parts = shlex.split(rest)
            flags = [p for p in parts if p.startswith("--")]
            sources = [p for p in parts if not p.startswith("--")][:-1]
            source_stage = [f.split("=", 1)[1] for f in flags if f.startswith("--from=")]
            if source_stage:
                assert source_stage[0] in names, f"COPY from unknown stage: {rest}"
                continue
            for src in sources:
                assert (ROOT / src).exists(), f"COPY of missing {src}"
                included = False
                for pattern in ignore:  # last match wins, as in .dockerignore
                    negated = pattern.startswith("!")
                    pat = pattern.lstrip("!").rstrip("/")
                    if fnmatch.fnmatch(src.rstrip("/"), pat):
                        included = negated
                assert included, f"{src} is excluded from the build context"


def test_dockerfile_build_args_and_default_command(
    dockerfile: list[tuple[str, list[tuple[str, str]]]],
) -> None:
    build = dict(dockerfile)["build"]
    args = {rest.split("=")[0] for word, rest in build if word == "ARG"}
    assert {"BAKE_MODELS", "LLAMA_CMAKE_ARGS"} <= args
    runtime = dict(dockerfile)["runtime"]
    entry = [yaml.safe_load(rest) for word, rest in runtime if word == "ENTRYPOINT"]
    cmd = [yaml.safe_load(rest) for word, rest in runtime if word == "CMD"]
    assert entry == [["edgellm"]]
    check_cli_args(cmd[0])


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def test_compose_runs_a_gateway_and_two_nodes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    default = {n for n, s in services.items() if not s.get("profiles")}
    assert default == {"gateway", "node-a", "node-b"}
    for name in default:
        service = services[name]
        assert (
            ROOT / "deploy" / service["build"]["context"] / service["build"]["dockerfile"]
        ).exists()
        check_cli_args(service["command"])
    for name in ("node-a", "node-b"):
        assert services[name]["mem_limit"] and services[name]["cpus"]
    depends = services["gateway"]["depends_on"]
    assert depends == {n: {"condition": "service_healthy"} for n in ("node-a", "node-b")}


def test_compose_publishes_on_loopback_only_and_mounts_existing_files(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all hosts"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


def test_compose_gateway_config_parses_and_targets_the_nodes(compose: dict[str, Any]) -> None:
    cfg = EdgeLLMConfig(**yaml.safe_load((DEPLOY / "compose" / "gateway.yaml").read_text()))
    assert cfg.models == []
    urls = cfg.remote_models[0].backends[0].static_urls()
    hosts = {u.split("//")[1].split(":")[0] for u in urls}
    assert hosts == {"node-a", "node-b"} <= set(compose["services"])


def test_committed_monitoring_assets_are_current() -> None:
    for rel, text in compose_assets().items():
        assert (DEPLOY / rel).read_text() == text, f"deploy/{rel} is stale: edgellm deploy assets"


def test_dashboard_panels_are_laid_out_without_overlap() -> None:
    import json

    dash = json.loads((DEPLOY / "grafana" / "edgellm.json").read_text())
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, panel["title"]
        cells |= mine
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
