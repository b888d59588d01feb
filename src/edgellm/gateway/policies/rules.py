"""`rules`: prompt length, regex markers (code, math, several questions), privacy pinning."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgellm.config import TIERS, PolicyConfig, Tier
from edgellm.gateway.policies.base import PolicyContext, fallback_order, register
from edgellm.gateway.request import GatewayRequest
from edgellm.gateway.route import Candidate, Route, StartedAnswer


class Marker(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    pattern: str
    tier: Tier = "edge-large"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"bad regular expression: {exc}") from exc
        return v


def _default_markers() -> list[Marker]:
    return [
        Marker(name="code", pattern=r"```|\bdef \w+\(|#include|\bfunction\b|\bclass \w+[:(]"),
        # `-` and `/` between digits count only with spaces around them: without, they are
        # dates, ranges and phone numbers ("exp 12/26", "2019-2021")
        Marker(
            name="math",
            pattern=r"\d\s*[+*\u00d7\u00f7^=]\s*\d|\d\s+[-/]\s+\d"
            r"|\b(integral|derivative|prove|equation|solve for)\b",
        ),
        Marker(name="several_questions", pattern=r"\?[^?]+\?"),
    ]


def _default_pii() -> dict[str, str]:
    # tried in this order, the most specific first: text one pattern matched is not seen by
    # the next (an IBAN's digits would also pass for a card or a phone number)
    return {
        "email": r"[\w.+-]+@[\w-]+\.[\w.-]+",
        "iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b",
        "card": r"\b(?:\d[ -]?){12,15}\d\b",
        "phone": r"\+?\d[\d ()-]{8,}\d",
    }


class RulesPolicyConfig(PolicyConfig):
    kind: Literal["rules"] = "rules"
    long_prompt_chars: int = Field(2000, ge=1)
    long_prompt_tier: Tier = "cloud"
    markers: list[Marker] = Field(default_factory=_default_markers)
    pii_patterns: dict[str, str] = Field(default_factory=_default_pii)
    private_header: str = "x-edgellm-private"


@register("rules", RulesPolicyConfig)
class RulesPolicy:
    def __init__(self, config: RulesPolicyConfig, context: PolicyContext) -> None:
        self.config = config
        self.context = context
        self.markers = [
            (m.name, re.compile(m.pattern, re.IGNORECASE), m.tier) for m in config.markers
        ]
        self.pii = [(n, re.compile(p)) for n, p in config.pii_patterns.items()]

    def choose(self, call: GatewayRequest, info: Route) -> list[Candidate]:
        models = self.context.candidates(self.config.models)
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

    async def route(self, call: GatewayRequest, info: Route) -> StartedAnswer:
        return await self.context.execute(call, self.choose(call, info), info)


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
