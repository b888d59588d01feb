"""Fake OpenAI-compatible backends and gateways, each a uvicorn server on 127.0.0.1 in a thread."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import uvicorn

from edgellm.api.app import create_app
from edgellm.config import EdgeLLMConfig, ServerConfig
from edgellm.engine.pool import EnginePool
from edgellm.gateway.fake import FakeBackend, FakeBehaviour
from edgellm.gateway.router import Router
from edgellm.node.http_protocol import CoalescingHttpToolsProtocol
from tests.integration.servers import free_port


@dataclass
class Served:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, *, force: bool = False) -> None:
        self.server.force_exit = force
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve(app: Any, port: int | None = None, *, http: Any = "auto") -> Served:
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", http=http
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    return Served(f"http://127.0.0.1:{port}", server, thread)


@dataclass
class Fake:
    backend: FakeBackend
    served: Served

    @property
    def base_url(self) -> str:
        return f"{self.served.url}/v1"

    @property
    def b(self) -> FakeBehaviour:
        return self.backend.behaviour


def start_fake(**behaviour: Any) -> Fake:
    backend = FakeBackend(FakeBehaviour(**behaviour))
    return Fake(backend, serve(backend))


@dataclass
class Gateway:
    router: Router
    served: Served

    @property
    def url(self) -> str:
        return self.served.url

    def client(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("api_key", "unused")
        return openai.OpenAI(base_url=f"{self.url}/v1", max_retries=0, **kwargs)

    def http(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def stop(self) -> None:
        self.served.stop()


def start_gateway(config: dict[str, Any] | EdgeLLMConfig, *, load_models: bool = False) -> Gateway:
    cfg = config if isinstance(config, EdgeLLMConfig) else EdgeLLMConfig(**config)
    pool = EnginePool(cfg.models) if cfg.models else None
    router = Router(cfg, pool)
    # the protocol `edgellm serve` runs (one write per answer, disconnects without a task)
    served = serve(create_app(router, ServerConfig()), http=CoalescingHttpToolsProtocol)
    if pool is not None and load_models and not pool.wait_loaded(timeout=120):
        raise RuntimeError("models did not load")
    return Gateway(router, served)


def remote(name: str, urls: list[str], tier: str = "cloud", **backend: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"urls": urls, "health_path": None} | backend
    return {"name": name, "tier": tier, "backends": [b]}


def wait_until(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
