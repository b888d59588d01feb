"""deploy/compose.yaml as a user runs it (podman-compose): up, a chat through its gateway, down,
and nothing of the project left behind."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from edgellm.deploy.launch import free_port
from tests.container.engine import ROOT, Engine, engine_env, unique, wait_healthy

COMPOSE = ROOT / "deploy" / "compose.yaml"


def leftovers(engine: Engine, project: str) -> list[str]:
    label = f"label=io.podman.compose.project={project}"
    found = []
    for kind in ("container", "pod", "network", "volume"):
        args = [kind, "ls", "--filter", label, "--format", "{{.Name}}"]
        if kind == "container":
            args = ["ps", "-a", "--filter", label, "--format", "{{.Names}}"]
        done = engine.run(*args, check=False)
        found += [f"{kind} {n}" for n in done.stdout.split()]
    return found


def test_compose_up_answers_a_chat_and_down_leaves_nothing(
    engine: Engine, image: str, podman_compose: Path
) -> None:
    project = unique("edgellm-compose")
    port = free_port()
    env = engine_env(engine.name) | {
        "EDGELLM_IMAGE": image,
        "EDGELLM_PORT": str(port),
        "OPENAI_API_KEY": "",
    }
    env.pop("COMPOSE_PROFILES", None)

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(podman_compose), "-p", project, "-f", str(COMPOSE), *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

    try:
        up = compose("up", "-d", "--no-build")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
        gateway = f"{project}_gateway_1"
        url = f"http://127.0.0.1:{port}"
        wait_healthy(engine, gateway, url)
        body = {
            "model": "smollm2",  # the alias compose/gateway.yaml gives the nodes' model
            "messages": [{"role": "user", "content": "Say hi."}],
            "max_tokens": 4,
            "temperature": 0,
        }
        # The nodes may still be loading when the gateway is up (podman < 4.6 does not wait for
        # their health): a 503 then, an answer once one is ready.
        deadline = time.monotonic() + 240
        with httpx.Client(base_url=url, timeout=120) as client:
            r = client.post("/v1/chat/completions", json=body)
            while r.status_code == 503 and time.monotonic() < deadline:
                time.sleep(1)
                r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] >= 1
        assert leftovers(engine, project)  # the check below can see the project's things
    finally:
        down = compose("down", "-t", "5")
    assert down.returncode == 0, down.stderr[-2000:]
    assert leftovers(engine, project) == []
