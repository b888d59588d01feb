"""Replicas from a DNS name (a Kubernetes headless Service lists one address per ready pod)."""

from __future__ import annotations

import asyncio
import logging
import socket

log = logging.getLogger(__name__)


async def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to right now, sorted (IPv6 in brackets), or [] on failure."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        log.warning("cannot resolve %s: %s", host, exc)
        return []
    found = {str(info[4][0]) for info in infos}
    return sorted(f"[{a}]" if ":" in a else a for a in found)


def replica_urls(addresses: list[str], *, scheme: str, port: int, path: str) -> list[str]:
    return [f"{scheme}://{a}:{port}{path}" for a in addresses]
