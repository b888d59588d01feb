"""How the cloud link gets its delay, jitter, loss and rate: pluggable shapers, chosen by name
or automatically (netem where the kernel has it, else tbf plus the delaying proxy)."""

from __future__ import annotations

from dataclasses import dataclass

from edgellm.testbed.host import netem_available, run
from edgellm.testbed.spec import LinkSpec


@dataclass(frozen=True)
class LinkEnds:
    host_if: str
    ns: str
    ns_if: str


class Shaper:
    """Applies a LinkSpec to both ends of a veth pair; `needs_proxy` if delay is left undone."""

    name = ""
    needs_proxy = False

    def apply(self, ends: LinkEnds, link: LinkSpec) -> None:
        raise NotImplementedError


def _tc(ends: LinkEnds, *qdisc: str) -> None:
    run("tc", "qdisc", "replace", "dev", ends.host_if, "root", *qdisc)
    run("ip", "netns", "exec", ends.ns, "tc", "qdisc", "replace", "dev", ends.ns_if, "root", *qdisc)


class NetemShaper(Shaper):
    name = "netem"

    def apply(self, ends: LinkEnds, link: LinkSpec) -> None:
        args = ["netem", "delay", f"{link.delay_ms}ms"]
        if link.jitter_ms:
            args.append(f"{link.jitter_ms}ms")
        if link.loss_pct:
            args += ["loss", f"{link.loss_pct}%"]
        if link.rate_mbit:
            args += ["rate", f"{link.rate_mbit}mbit"]
        _tc(ends, *args)


class TbfProxyShaper(Shaper):
    """`tc tbf` limits the rate on the link; the harness's DelayProxy adds delay/jitter/loss."""

    name = "tbf+proxy"
    needs_proxy = True

    def apply(self, ends: LinkEnds, link: LinkSpec) -> None:
        if link.rate_mbit is None:
            return
        bytes_per_s = link.rate_mbit * 1e6 / 8
        burst = max(32 * 1024, int(bytes_per_s / 100))  # >= rate/HZ, or tbf drops everything
        _tc(ends, "tbf", "rate", f"{link.rate_mbit}mbit", "burst", str(burst), "latency", "100ms")


SHAPERS: dict[str, type[Shaper]] = {s.name: s for s in (NetemShaper, TbfProxyShaper)}


def choose(name: str = "auto") -> Shaper:
    if name == "auto":
        name = NetemShaper.name if netem_available() else TbfProxyShaper.name
    try:
        return SHAPERS[name]()
    except KeyError:
        raise ValueError(
            f"unknown shaper {name!r}; choose from auto, {', '.join(SHAPERS)}"
        ) from None
