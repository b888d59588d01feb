from edgellm.deploy.launch import served_model


def test_a_node_serves_a_bundled_model_in_its_catalog_tier() -> None:
    tiers = {}
    for model in ("gemma3-270m", "smollm2-135m-instruct", "/models/My Model.gguf"):
        served = served_model(model)
        tiers[served.name] = served.tier
    assert tiers == {
        "gemma3-270m": "edge-large",
        "smollm2-135m-instruct": "edge-small",
        "My-Model": "edge-small",
    }
