"""Rendered manifests: schema-valid for the Kubernetes version K3s ships, and wired correctly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from edgellm.cli import app
from edgellm.config import ConfigError, EdgeLLMConfig
from edgellm.deploy import render as r
from edgellm.deploy.spec import K3S_KUBERNETES_VERSION, ClusterSpec, slug
from edgellm.deploy.validate import supported_versions, validate
from tests.unit.deploy.cli_args import check_cli_args

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "deploy" / "k3s" / "cluster.yaml"
COMMITTED = ROOT / "deploy" / "k3s" / "manifests"


@pytest.fixture(scope="module")
def spec() -> ClusterSpec:
    return ClusterSpec.from_yaml(EXAMPLE)


@pytest.fixture(scope="module")
def objects(spec: ClusterSpec) -> list[dict[str, Any]]:
    return [o for objs in r.render(spec).values() for o in objs]


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}"
    return found[0]


def test_the_k3s_version_is_one_the_validator_knows() -> None:
    assert K3S_KUBERNETES_VERSION in supported_versions()


def test_committed_manifests_validate_strictly() -> None:
    docs = [d for f in sorted(COMMITTED.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "Deployment",
        "DaemonSet",
        "Service",
        "Ingress",
        "ConfigMap",
        "PodDisruptionBudget",
    } <= kinds
    # The K3s release targeted, and the newest schemas known (nothing deprecated on the way).
    for version in (K3S_KUBERNETES_VERSION, supported_versions()[-1]):
        for doc in docs:
            assert validate(doc, version) is None, validate(doc, version)


def test_committed_manifests_are_what_the_renderer_produces(spec: ClusterSpec) -> None:
    fresh = r.render(spec)
    assert sorted(p.name for p in COMMITTED.glob("*.yaml")) == sorted(fresh)
    for name, objs in fresh.items():
        committed = list(yaml.safe_load_all((COMMITTED / name).read_text()))
        assert committed == objs, f"{name} is stale: re-render deploy/k3s (see README)"


def test_validator_rejects_a_broken_object(objects: list[dict[str, Any]]) -> None:
    broken = yaml.safe_load(yaml.safe_dump(_find(objects, "Service", "edgellm-gateway")))
    broken["spec"]["ports"][0]["port"] = "eighty"
    problem = validate(broken, K3S_KUBERNETES_VERSION)
    assert problem is not None and "Service/edgellm-gateway" in problem


def test_gateway_configmap_parses_and_points_at_headless_services(
    spec: ClusterSpec, objects: list[dict[str, Any]]
) -> None:
    text = _find(objects, "ConfigMap", "edgellm-gateway")["data"]["gateway.yaml"]
    cfg = EdgeLLMConfig(**yaml.safe_load(text))
    assert cfg.models == []  # the gateway loads no model itself
    remote = {m.name: m for m in cfg.remote_models}
    for model in spec.config.models:
        backend = remote[model.name].backends[0]
        assert backend.dns == f"edgellm-node-{slug(model.name)}.edgellm.svc.cluster.local"
        assert remote[model.name].aliases == model.aliases
        service = _find(objects, "Service", f"edgellm-node-{slug(model.name)}")
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["ports"][0]["port"] == backend.port
    assert remote["cloud"].backends[0].url == "https://api.openai.com/v1"
    assert [p.name for p in cfg.policies] == ["auto"]
    assert cfg.server.host == "0.0.0.0"


def test_node_workloads_are_pinned_to_pis_with_probes_and_limits(
    spec: ClusterSpec, objects: list[dict[str, Any]]
) -> None:
    smol = _find(objects, "Deployment", "edgellm-node-smollm2-135m-instruct")
    gemma = _find(objects, "DaemonSet", "edgellm-node-gemma3-270m")
    assert smol["spec"]["replicas"] == 3
    for workload in (smol, gemma):
        pod = workload["spec"]["template"]
        terms = pod["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        keys = {e["key"] for e in terms[0]["matchExpressions"]}
        assert spec.pi_label in keys
        container = pod["spec"]["containers"][0]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["path"] == "/health"
        assert container["resources"]["limits"]["memory"]
        assert pod["metadata"]["labels"]["app.kubernetes.io/part-of"] == "edgellm"
        # The pod template matches its own selector, or the API server rejects the workload.
        assert (
            workload["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        )
    assert "edgellm.io/ram" in str(gemma["spec"]["template"]["spec"]["affinity"])
    args = smol["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--threads") + 1] == "2"  # from the CPU limit of 2
    check_cli_args(args)


def test_gateway_runs_serve_with_its_configmap(objects: list[dict[str, Any]]) -> None:
    pod = _find(objects, "Deployment", "edgellm-gateway")["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    check_cli_args(args)
    assert args[:3] == ["serve", "--config", "/etc/edgellm/gateway.yaml"]
    assert pod["volumes"][0]["configMap"]["name"] == "edgellm-gateway"


def test_cloud_key_comes_from_the_secret(objects: list[dict[str, Any]]) -> None:
    gateway = _find(objects, "Deployment", "edgellm-gateway")
    env = gateway["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [
        {
            "name": "OPENAI_API_KEY",
            "valueFrom": {
                "secretKeyRef": {"name": "edgellm-cloud", "key": "OPENAI_API_KEY", "optional": True}
            },
        }
    ]
    assert not [o for o in objects if o["kind"] == "Secret"]  # never a key in the manifests


def test_ingress_is_traefik_and_budgets_keep_a_replica(objects: list[dict[str, Any]]) -> None:
    ingress = _find(objects, "Ingress", "edgellm-gateway")
    assert ingress["spec"]["ingressClassName"] == "traefik"
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == "edgellm-gateway"
    pdbs = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert pdbs["edgellm-node-smollm2-135m-instruct"]["minAvailable"] == 1
    assert pdbs["edgellm-node-gemma3-270m"]["maxUnavailable"] == 1
    assert pdbs["edgellm-gateway"]["minAvailable"] == 1


def test_single_replica_budget_still_allows_a_drain(spec: ClusterSpec) -> None:
    one = spec.model_copy(
        update={
            "nodes": {
                "smollm2-135m-instruct": spec.nodes["smollm2-135m-instruct"].model_copy(
                    update={"replicas": 1}
                )
            }
        }
    )
    pdb = r.node_objects(one, one.config.models[0])[2]
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}


def test_monitoring_objects(objects: list[dict[str, Any]]) -> None:
    prom = yaml.safe_load(
        _find(objects, "ConfigMap", "edgellm-prometheus")["data"]["prometheus.yml"]
    )
    job = prom["scrape_configs"][0]
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["edgellm"]
    dash = _find(objects, "ConfigMap", "edgellm-grafana-dashboard")
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    exprs = " ".join(
        t["expr"]
        for p in yaml.safe_load(dash["data"]["edgellm.json"])["panels"]
        for t in p["targets"]
    )
    for metric in (
        "edgellm_requests_total",
        "edgellm_time_to_first_token_seconds_bucket",
        "edgellm_gateway_backend_requests_total",
        "edgellm_queue_depth",
    ):
        assert metric in exprs


def test_nodes_naming_an_unknown_model_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("nodes:\n  no-such-model: {replicas: 2}\n")
    with pytest.raises(ConfigError, match="no-such-model"):
        ClusterSpec.from_yaml(bad)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("smollm2-135m-instruct", "smollm2-135m-instruct"),
        ("Org/Model:Q4_K_M", "org-model-q4-k-m"),
        ("7b.model", "b-model"),
    ],
)
def test_slug(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_cli_renders_valid_yaml_to_stdout() -> None:
    result = CliRunner().invoke(app, ["deploy", "render", "--config", str(EXAMPLE), "--validate"])
    assert result.exit_code == 0, result.output
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert len(docs) == 14
    assert "objects valid for Kubernetes 1.34.0" in result.stderr


def test_cli_reports_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("namespace: Not_Valid\n")
    result = CliRunner().invoke(app, ["deploy", "render", "--config", str(bad)])
    assert result.exit_code == 1
    assert "namespace" in result.output


def _with_llama_server(spec: ClusterSpec, source: str) -> dict[str, Any]:
    data = spec.model_dump(mode="json")
    data["config"]["models"][0]["source"] = source
    data["nodes"]["smollm2-135m-instruct"]["runtime"] = "llama-server"
    return data


def test_llama_server_runtime_renders_a_valid_node(spec: ClusterSpec) -> None:
    other = ClusterSpec.model_validate(_with_llama_server(spec, "/models/smollm2.q4_1.gguf"))
    workload, service, _ = r.node_objects(other, other.config.models[0])
    assert validate(workload, K3S_KUBERNETES_VERSION) is None
    container = workload["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/ggml-org/llama.cpp:server"
    assert "command" not in container  # the image's own entrypoint is llama-server
    args = container["args"]
    assert args[args.index("-m") + 1] == "/models/smollm2.q4_1.gguf"
    # The model's name, then its aliases (the example gives smollm2 one).
    assert args[args.index("--alias") + 1] == "smollm2-135m-instruct,smollm2"
    assert args[args.index("-t") + 1] == "2"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert service["spec"]["clusterIP"] == "None"  # the gateway finds it the same way


def test_llama_server_runtime_needs_a_gguf_under_models(spec: ClusterSpec) -> None:
    with pytest.raises(ValidationError, match="GGUF file under /models"):
        ClusterSpec.model_validate(_with_llama_server(spec, "smollm2-135m-instruct"))


def test_unknown_runtime_is_rejected(spec: ClusterSpec) -> None:
    data = spec.model_dump(mode="json")
    data["nodes"]["smollm2-135m-instruct"]["runtime"] = "vllm"
    with pytest.raises(ValidationError, match="unknown 'vllm'"):
        ClusterSpec.model_validate(data)
