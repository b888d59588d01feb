from pathlib import Path

import pytest

from edgellm.config import ConfigError, EdgeLLMConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_a_full_gateway_file_validates(tmp_path: Path) -> None:
    cfg = EdgeLLMConfig.from_yaml(
        write(
            tmp_path,
            """
models:
  - {name: small, source: smollm2-135m-instruct, tier: edge-small}
remote_models:
  - name: big
    tier: edge-large
    cost_per_1k_tokens: 0.0
    backends:
      - {dns: big.default.svc.cluster.local, port: 8080}
  - name: cloud
    context_length: 128000
    cost_per_1k_tokens: 0.15
    backends:
      - {url: "https://api.example.com/v1", api_key_env: CLOUD_KEY, model: gpt-4o-mini}
policies:
  - {name: auto, kind: cascade, models: [small, big, cloud], threshold: -0.8,
     early_abort_tokens: 16}
  - {name: fast, kind: load}
router: {retries: 1, cooldown_s: 5}
auth:
  keys: [{name: team, sha256: "%s"}]
"""
            % ("a" * 64),
        )
    )
    assert cfg.remote_models[1].backends[0].api_key_env == "CLOUD_KEY"
    assert cfg.policies[0].kind == "cascade" and cfg.router.retries == 1
    assert cfg.remote_models[0].tier == "edge-large"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "remote_models: [{name: c, backends: [{url: 'ftp://x'}]}]",
            r"remote_models\.0\.backends\.0\.url",
        ),
        (
            "remote_models: [{name: c, backends: [{}]}]",
            r"remote_models\.0\.backends\.0.*exactly one",
        ),
        (
            "remote_models: [{name: c, tier: moon, backends: [{url: 'http://a'}]}]",
            r"remote_models\.0\.tier",
        ),
        (
            "policies: [{name: p, kind: telepathy}]",
            r"policies\.0: unknown policy kind 'telepathy'; known: cascade, learned, load, rules",
        ),
        ("policies: [{name: p}]", r"policies\.0: unknown policy kind None"),
        ("policies: [{name: p, kind: load, spill_teir: cloud}]", r"policies\.0\.spill_teir: Extra"),
        ("policies: [{name: p, kind: cascade, top_logprobs: 99}]", r"policies\.0\.top_logprobs"),
        ("policies: [{name: p, kind: learned}]", r"policies\.0\.path: Field required"),
        ("policies: [{name: p, kind: cascade, models: [nope]}]", r"unknown models \['nope'\]"),
        (
            "policies: [{name: p, kind: rules, markers: [{name: m, pattern: '('}]}]",
            r"policies\.0\.markers\.0\.pattern",
        ),
        ("auth: {keys: [{name: k, sha256: plain-text-key}]}", r"auth\.keys\.0\.sha256"),
        (
            "models: [{name: a, source: x}]\nremote_models: [{name: a, backends: [{url: 'http://a'}]}]",
            "used twice",
        ),
    ],
)
def test_errors_name_the_yaml_path(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        EdgeLLMConfig.from_yaml(write(tmp_path, text))


def test_defaults_stay_the_two_bundled_models() -> None:
    cfg = EdgeLLMConfig()
    assert [(m.name, m.tier) for m in cfg.models] == [
        ("smollm2-135m-instruct", "edge-small"),
        ("gemma3-270m", "edge-large"),
    ]
    assert cfg.remote_models == [] and cfg.policies == [] and cfg.auth.keys == []


def test_a_policy_entry_is_its_kind_config_and_dumps_whole() -> None:
    from edgellm.gateway.policies.cascade import CascadePolicyConfig
    from edgellm.gateway.policies.load import LoadPolicyConfig

    entries = [
        {"name": "c", "kind": "cascade", "threshold": -0.3, "early_abort_tokens": 8},
        {"name": "l", "kind": "load", "spill_tier": "edge-large"},
    ]
    cfg = EdgeLLMConfig.model_validate({"policies": entries})
    cascade, load = cfg.policies
    assert isinstance(cascade, CascadePolicyConfig) and cascade.early_abort_tokens == 8
    assert isinstance(load, LoadPolicyConfig) and load.spill_tier == "edge-large"
    # the deployment renderer writes the config back out: every field of each kind survives
    again = EdgeLLMConfig.model_validate(cfg.model_dump(mode="json"))
    assert again.policies == cfg.policies
    assert cfg.model_dump()["policies"][0]["threshold"] == -0.3


def test_the_documented_example_validates() -> None:
    from edgellm.gateway.policies import POLICY_KINDS

    example = Path(__file__).parents[3] / "docs" / "gateway.example.yaml"
    cfg = EdgeLLMConfig.from_yaml(example)
    assert {p.kind for p in cfg.policies} <= set(POLICY_KINDS)
    assert set(POLICY_KINDS) == {"rules", "learned", "cascade", "load"}
