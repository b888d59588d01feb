"""The rendered K3s manifests played with `podman kube play`, as far as podman plays their kinds:
the node and gateway Deployments start from the image with the rendered command lines, limits,
security context and ConfigMap, and the gateway answers a chat through the node.

Podman has no Services, so the gateway's backend DNS name becomes the node pod's name on the
podman network (what a headless Service's name gives in K3s), and the containers' ports are
dropped (podman 4.3 would publish them on the host's port 8080). Every played object's name ends
in the run's own suffix, so that two runs (or what a killed run left) never share a pod, a
container or a ConfigMap. The kinds not played (Namespace, Service, Ingress,
PodDisruptionBudget) are listed in docs/cluster.md with what covers them instead."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from edgellm.deploy import render as r
from edgellm.deploy.spec import ClusterSpec
from tests.container.engine import Engine

MODEL = "smollm2-135m-instruct"
PLAYED = {"Deployment", "ConfigMap"}
NOT_PLAYED = {"Namespace", "Service", "Ingress", "PodDisruptionBudget"}


def pod(deployment: str, run: str) -> str:
    """The (first) pod podman makes of a played Deployment: NAME-pod-0."""
    return f"{deployment}-{run}-pod-0"


def spec(image: str) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "image": image,
            "image_pull_policy": "Never",
            "models_host_path": None,
            "gateway": {"replicas": 1},
            "nodes": {
                MODEL: {
                    "replicas": 1,
                    "resources": {"cpu_limit": "1", "memory_limit": "1Gi"},
                }
            },
            "config": {
                "models": [
                    {"name": MODEL, "source": MODEL, "aliases": ["smollm2"],
                     "engine": {"n_ctx": 2048, "max_queue": 8}},
                ],
                "policies": [{"name": "auto", "kind": "load", "models": [MODEL]}],
                "router": {"default_policy": "auto", "health_interval_s": 1},
            },
        }
    )  # fmt: skip


def playable(spec: ClusterSpec, run: str) -> tuple[list[dict[str, Any]], set[str]]:
    """The rendered objects podman plays, named for the run `run` (the Service name swapped for
    the node pod's), and the kinds left out."""
    objects = [o for objs in r.render(spec).values() for o in objs]
    kept = [o for o in objects if o["kind"] in PLAYED]
    left = {o["kind"] for o in objects} - PLAYED
    node_pod = pod(r.node_name(MODEL), run)
    for obj in kept:
        obj["metadata"]["name"] = f"{obj['metadata']['name']}-{run}"
        if obj["kind"] == "Deployment":
            for volume in obj["spec"]["template"]["spec"].get("volumes", []):
                if "configMap" in volume:
                    volume["configMap"]["name"] = f"{volume['configMap']['name']}-{run}"
            # Podman 4.3 publishes a containerPort without hostPort on the host's same port
            # (every interface); the pods are reached over the podman network instead, so the
            # ports go and the probes name the port by number.
            for container in obj["spec"]["template"]["spec"]["containers"]:
                container.pop("ports")
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if probe in container:
                        container[probe]["httpGet"]["port"] = r.PORT
        if obj["kind"] == "ConfigMap" and "gateway.yaml" in obj["data"]:
            text = obj["data"]["gateway.yaml"]
            assert r.service_dns(spec, MODEL) in text
            obj["data"]["gateway.yaml"] = text.replace(r.service_dns(spec, MODEL), node_pod)
    return kept, left


@dataclass
class Played:
    left: set[str]  # the kinds not played
    node_pod: str
    gateway_pod: str


@pytest.fixture
def played(engine: Engine, image: str, tmp_path: Path) -> Iterator[Played]:
    if engine.name != "podman":
        pytest.skip("`kube play` is podman's; this machine uses docker")
    cluster = spec(image)
    run = uuid.uuid4().hex[:8]
    with engine.network() as net:
        objects, left = playable(cluster, run)
        files = []
        # The node first: the gateway resolves its name when it starts.
        for kind_order in (("node",), ("gateway",)):
            part = [
                o for o in objects
                if any(k in o["metadata"]["name"] for k in kind_order)
            ]  # fmt: skip
            path = tmp_path / f"{kind_order[0]}.yaml"
            path.write_text(r.to_yaml(part))
            files.append(path)
        try:
            for path in files:
                engine.run("kube", "play", "--network", net, str(path))
            yield Played(left, pod(r.node_name(MODEL), run), pod("edgellm-gateway", run))
        finally:
            for path in files:
                engine.run("kube", "down", str(path), check=False)
            # `kube play` makes a named volume of each ConfigMap it mounts; `kube down` keeps it.
            for obj in objects:
                if obj["kind"] == "ConfigMap":
                    engine.run("volume", "rm", "--force", obj["metadata"]["name"], check=False)


def _exec_json(engine: Engine, container: str, script: str) -> Any:
    out = engine.run("exec", container, "python", "-c", script, timeout=300).stdout
    return json.loads(out)


GET_HEALTH = """
import json, time, urllib.request as u
deadline = time.time() + 240
while True:
    try:
        u.urlopen("http://127.0.0.1:8080/health", timeout=3)
        print(json.dumps("ok")); break
    except Exception as exc:
        if time.time() > deadline: print(json.dumps(str(exc))); break
        time.sleep(0.5)
"""

CHAT = """
import json, time, urllib.error, urllib.request as u
body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "Say hi."}],
                   "max_tokens": 4, "temperature": 0}).encode()
deadline = time.time() + 240
while True:
    req = u.Request("http://127.0.0.1:8080/v1/chat/completions", body,
                    {"content-type": "application/json"})
    try:
        with u.urlopen(req, timeout=120) as r:
            print(json.dumps({"status": r.status, "body": json.loads(r.read()),
                              "route": r.headers.get("x-edgellm-route")})); break
    except urllib.error.HTTPError as exc:
        if exc.code != 503 or time.time() > deadline:
            print(json.dumps({"status": exc.code, "body": exc.read().decode()})); break
        time.sleep(1)
"""


def test_played_manifests_start_the_node_and_gateway_and_answer_a_chat(
    engine: Engine, played: Played
) -> None:
    assert played.left == NOT_PLAYED  # the docs list exactly these
    node = f"{played.node_pod}-node"
    gateway = f"{played.gateway_pod}-gateway"
    assert _exec_json(engine, node, GET_HEALTH) == "ok"
    assert _exec_json(engine, gateway, GET_HEALTH) == "ok"

    # The rendered pod specs took effect: the non-root user and the node's limits.
    assert engine.run("exec", node, "id", "-u").stdout.strip() == "10001"
    memory, cpus = engine.run(
        "inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}", node
    ).stdout.split()
    assert (int(memory), int(cpus)) == (1024**3, 10**9)

    answer = _exec_json(engine, gateway, CHAT)
    assert answer["status"] == 200, answer
    assert answer["body"]["usage"]["completion_tokens"] >= 1
    # The backend is a DNS name (a headless Service in K3s): the replica is the address it
    # resolves to, the node pod's.
    resolve = f"import json, socket; print(json.dumps(socket.gethostbyname('{played.node_pod}')))"
    address = _exec_json(engine, gateway, resolve)
    assert f"replica=http://{address}:{r.PORT}/v1" in (answer["route"] or ""), answer["route"]


def test_only_the_listed_kinds_are_left_out_and_the_service_name_is_swapped() -> None:
    cluster = spec("localhost/edgellm:test")
    objects = [o for objs in r.render(cluster).values() for o in objs]
    assert {o["kind"] for o in objects} == PLAYED | NOT_PLAYED
    kept, left = playable(cluster, "run1")
    assert left == NOT_PLAYED
    text = yaml.safe_dump(kept)
    assert "containerPort" not in text and "hostPort" not in text
    assert r.service_dns(cluster, MODEL) not in text
    assert pod(r.node_name(MODEL), "run1") in text


def test_two_runs_share_no_name() -> None:
    """Pods, containers and ConfigMap volumes are named after the played objects: two runs at
    once (or a killed run's leftovers) would collide on fixed names."""
    cluster = spec("localhost/edgellm:test")

    def names(run: str) -> set[str]:
        kept, _ = playable(cluster, run)
        configmaps = {o["metadata"]["name"] for o in kept if o["kind"] == "ConfigMap"}
        for o in kept:  # every ConfigMap a Deployment mounts is one this run plays
            if o["kind"] == "Deployment":
                for volume in o["spec"]["template"]["spec"].get("volumes", []):
                    if "configMap" in volume:
                        assert volume["configMap"]["name"] in configmaps, volume
        return {f"{o['kind']}/{o['metadata']['name']}" for o in kept}

    first, second = names("aaaa1111"), names("bbbb2222")
    assert len(first) == len(second) == 5  # 2 Deployments, the gateway's and 2 other ConfigMaps
    assert not first & second
    assert names("aaaa1111") == first  # the names depend on the run only
