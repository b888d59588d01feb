"""`rules`: prompt length, regex markers (code, math, several questions), privacy pinning."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from edgellm.config import TIERS, RulesPolicyConfig, Tier
from edgellm.gateway.call import Call
from edgellm.gateway.policies.base import fallback_order, register
from edgellm.gateway.route import RouteInfo

if TYPE_CHECKING:
    from edgellm.gateway.router import Routed, RoutedModel, Router


@register("rules")
class RulesPolicy:
    def __init__(self, config: RulesPolicyConfig, router: Router) -> None:
        self.config = config
        self.router = router
        self.markers = [
            (m.name, re.compile(m.pattern, re.IGNORECASE), m.tier) for m in config.markers
        ]
        self.pii = [(n, re.compile(p)) for n, p in config.pii_patterns.items()]

    def choose(self, call: Call, info: RouteInfo) -> list[RoutedModel]:
        models = self.router.by_tier(self.config.models or None)
        text = call.text()
        user = call.user_text()
        fired = [(name, tier) for name, rx, tier in self.markers if rx.search(user)]
        pii = find_pii(text, self.pii)
        header = call.headers.get(self.config.private_header.lower(), "").lower()
        private = call.private or header in {"1", "true", "yes"} or bool(pii)
        call.private = private
        long_prompt = len(text) >= self.config.long_prompt_chars
        wanted: list[Tier] = [t for _, t in fired]
        if long_prompt:
            wanted.append(self.config.long_prompt_tier)
        target = max(wanted, key=TIERS.index) if wanted else models[0].tier
        if private and target == "cloud":
            target = "edge-large"
        info.signals |= {
            "prompt_chars": len(text),
            "long_prompt": long_prompt,
            "markers": [n for n, _ in fired],
            "pii": pii,
            "private": private,
            "target_tier": target,
        }
        eligible = [m for m in models if not (private and not m.is_edge)]
        if not eligible:
            return []
        # the smallest model at or above the wanted tier, else the largest below it
        at_or_above = [m for m in eligible if TIERS.index(m.tier) >= TIERS.index(target)]
        first = at_or_above[0] if at_or_above else eligible[-1]
        return fallback_order(eligible, first)

    async def route(self, call: Call, info: RouteInfo) -> Routed:
        return await self.router.execute(call, self.choose(call, info), info)


def find_pii(text: str, patterns: list[tuple[str, re.Pattern[str]]]) -> list[str]:
    """The names of the patterns that match, tried in order; what one pattern matched is blanked
    out before the next looks, so one IBAN is an IBAN, not also a card and a phone number."""
    found = []
    for name, rx in patterns:
        blanked, n = rx.subn(lambda m: " " * len(m.group()), text)
        if n:
            found.append(name)
            text = blanked
    return found
