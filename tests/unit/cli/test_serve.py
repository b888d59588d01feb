from edgellm.cli.serve import node_config
from edgellm.config import EngineConfig


def test_a_node_serves_a_bundled_model_in_its_catalog_tier() -> None:
    tiers = {}
    for model in ("gemma3-270m", "smollm2-135m-instruct", "/models/My Model.gguf"):
        cfg = node_config(model, name=None, host="127.0.0.1", port=8081, engine=EngineConfig())
        (served,) = cfg.models
        tiers[served.name] = served.tier
    assert tiers == {
        "gemma3-270m": "edge-large",
        "smollm2-135m-instruct": "edge-small",
        "My-Model": "edge-small",
    }
