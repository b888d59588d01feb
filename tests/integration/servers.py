"""Real servers with real models on 127.0.0.1, run by uvicorn in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import httpx
import openai
import uvicorn

from edgellm.api.app import create_app
from edgellm.config import EngineConfig, ModelConfig, ServerConfig
from edgellm.engine.pool import EnginePool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    pool: EnginePool
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key="unused", max_retries=0, **kwargs)  # type: ignore[arg-type]

    def http(self, timeout: float = 120.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def start_server(
    models: list[ModelConfig], *, max_body_bytes: int = 4 * 1024 * 1024, wait_ready: bool = True
) -> RunningServer:
    port = free_port()
    pool = EnginePool(models)
    app = create_app(pool, ServerConfig(port=port, max_body_bytes=max_body_bytes))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    running = RunningServer(f"http://127.0.0.1:{port}", pool, server, thread)
    if wait_ready and not pool.wait_loaded(timeout=120):
        raise RuntimeError("models did not load")
    return running


def smollm2_config(**engine: object) -> ModelConfig:
    settings = {"n_ctx": 2048, "n_threads": 2} | engine
    return ModelConfig(
        name="smollm2-135m-instruct",
        source="smollm2-135m-instruct",
        aliases=["smollm2"],
        engine=EngineConfig(**settings),  # type: ignore[arg-type]
    )
