"""A node container as a Pi runs it: the image's non-root user, memory and CPU limits, /health 200
once the model is loaded, and a chat answer from each bundled model."""

from __future__ import annotations

import httpx
import pytest

from tests.container.engine import Engine, unique, wait_healthy

# A Raspberry Pi 5's share for one model: two cores, the manifests' 768 MiB-1 GiB.
LIMITS = ("--memory", "1g", "--cpus", "2")


def run_node(engine: Engine, image: str, model: str, cleanup: list[str], *extra: str) -> str:
    name = unique("edgellm-node")
    cleanup.append(name)
    engine.run(
        "run", "-d", "--name", name, *LIMITS, "-p", "127.0.0.1::8080", *extra, image,
        "node", "--model", model, "--host", "0.0.0.0", "--port", "8080", "--threads", "2",
        "--ctx", "2048",
    )  # fmt: skip
    return name


@pytest.mark.parametrize("model", ["smollm2-135m-instruct", "gemma3-270m"])
def test_a_node_container_serves_each_bundled_model_as_non_root_within_its_limits(
    engine: Engine, image: str, cleanup: list[str], model: str
) -> None:
    name = run_node(engine, image, model, cleanup)
    url = f"http://127.0.0.1:{engine.host_port(name)}"
    seconds = wait_healthy(engine, name, url)
    print(f"{model}: /health 200 after {seconds:.1f} s")

    # The process serving is the image's user, not root; the limits are the ones asked for.
    assert engine.run("exec", name, "id", "-u").stdout.strip() == "10001"
    limits = engine.run(
        "inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}", name
    ).stdout.split()
    assert limits == [str(1024**3), str(2 * 10**9)]

    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 8,
        "temperature": 0,
    }
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["model"] == model
    assert answer["usage"]["completion_tokens"] >= 1
    assert answer["choices"][0]["message"]["content"]
    # The same node refuses what it does not serve (an OpenAI-style 404, not a 5xx).
    wrong = httpx.post(f"{url}/v1/chat/completions", json=body | {"model": "nope"}, timeout=30)
    assert wrong.status_code == 404, wrong.text


def test_a_node_container_over_its_memory_limit_is_killed_not_served(
    engine: Engine, image: str, cleanup: list[str]
) -> None:
    """The limit is real: Gemma's weights and cache do not fit in 64 MiB."""
    name = run_node(engine, image, "gemma3-270m", cleanup, "--memory", "64m")
    port = engine.host_port(name)
    with pytest.raises(AssertionError, match=r"is (exited|stopped|gone)|not healthy"):
        wait_healthy(engine, name, f"http://127.0.0.1:{port}", timeout=90)
    # SIGKILLed (128 + 9) by the kernel's OOM killer: nothing else signals it. Podman's own
    # OOMKilled flag stays false with runc on this host's cgroup v1 memory controller.
    code = engine.run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    assert code == "137"


def test_the_image_keeps_its_base_ca_bundle_not_the_hosts(engine: Engine, image: str) -> None:
    """The host's CA reaches the build through a read-only mount only: the image's bundle is
    its base image's, byte for byte."""
    base = "docker.io/library/python:3.11-slim-bookworm"
    bundle = "/etc/ssl/certs/ca-certificates.crt"

    def digest(img: str) -> str:
        out = engine.run("run", "--rm", "--entrypoint", "sha256sum", img, bundle).stdout
        return out.split()[0]

    assert digest(image) == digest(base)
