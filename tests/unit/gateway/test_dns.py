import asyncio

import pytest

from edgellm.config import EdgeLLMConfig
from edgellm.gateway import router as router_module
from edgellm.gateway.backends import dns
from edgellm.gateway.router import Router


def test_dns_replicas_follow_the_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [["10.0.0.1", "10.0.0.2"], ["10.0.0.2", "10.0.0.3"], []]

    async def fake_resolve(host: str, port: int) -> list[str]:
        assert host == "small.default.svc" and port == 8081
        return answers.pop(0)

    monkeypatch.setattr(router_module, "resolve_addresses", fake_resolve)
    cfg = EdgeLLMConfig(
        models=[],
        remote_models=[
            {"name": "small", "tier": "edge-small",
             "backends": [{"dns": "small.default.svc", "port": 8081}]}
        ],
    )  # fmt: skip
    router = Router(cfg, None)
    model = router.models["small"]
    backend_cfg = cfg.remote_models[0].backends[0]

    async def go() -> list[list[str]]:
        seen = []
        for _ in range(3):
            await router.refresh_dns(model, backend_cfg)
            seen.append([r.id for r in model.replicas])
        await router.close()
        return seen

    first, second, third = asyncio.run(go())
    assert first == ["http://10.0.0.1:8081/v1", "http://10.0.0.2:8081/v1"]
    assert second == ["http://10.0.0.2:8081/v1", "http://10.0.0.3:8081/v1"]
    assert third == second  # a failed lookup keeps the last known replicas


def test_real_resolution_of_localhost() -> None:
    addresses = asyncio.run(dns.resolve_addresses("localhost", 80))
    assert "127.0.0.1" in addresses
    assert dns.replica_urls(["[::1]"], scheme="http", port=8080, path="/v1") == [
        "http://[::1]:8080/v1"
    ]
