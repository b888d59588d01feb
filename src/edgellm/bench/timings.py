"""Server-reported timings in the formats servers actually send.

- EdgeLLM and llama-server: a `timings` object (`prompt_n`, `prompt_ms`, `predicted_n`,
  `predicted_ms`, `cache_n`; EdgeLLM adds `queue_ms`, `ttft_ms`, `total_ms`).
- Ollama (`/api/chat`, `/api/generate` final object): `prompt_eval_count`,
  `prompt_eval_duration`, `eval_count`, `eval_duration`, `total_duration` in nanoseconds.
"""

from __future__ import annotations

from typing import Any

from edgellm.bench.records import ServerTimings

_EDGELLM_ONLY = ("queue_ms", "ttft_ms", "total_ms")


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None else None


def parse_server_timings(payload: dict[str, Any]) -> ServerTimings | None:
    """Timings from a response body or stream chunk, or None if it carries none."""
    timings = payload.get("timings")
    if isinstance(timings, dict) and ("prompt_ms" in timings or "predicted_ms" in timings):
        edgellm = any(key in timings for key in _EDGELLM_ONLY)
        return ServerTimings(
            source="edgellm" if edgellm else "llama-server",
            prompt_n=_int(timings.get("prompt_n")),
            prompt_ms=_num(timings.get("prompt_ms")),
            predicted_n=_int(timings.get("predicted_n")),
            predicted_ms=_num(timings.get("predicted_ms")),
            cache_n=_int(timings.get("cache_n")),
            queue_ms=_num(timings.get("queue_ms")),
            ttft_ms=_num(timings.get("ttft_ms")),
            total_ms=_num(timings.get("total_ms")),
        )
    if "eval_duration" in payload or "prompt_eval_duration" in payload:

        def ms(key: str) -> float | None:
            ns = _num(payload.get(key))
            return ns / 1e6 if ns is not None else None

        return ServerTimings(
            source="ollama",
            prompt_n=_int(payload.get("prompt_eval_count")),
            prompt_ms=ms("prompt_eval_duration"),
            predicted_n=_int(payload.get("eval_count")),
            predicted_ms=ms("eval_duration"),
            total_ms=ms("total_duration"),
        )
    return None
