"""Prompt tokens per conversation turn: how much of each turn's prompt the server reused.

Every turn of a multi-turn workload resends the whole conversation; a server (or a cluster
behind a gateway) that kept the conversation's cache prefills only the new part. Per turn:
mean prompt tokens, mean cached and prefilled tokens, the cached share, and mean TTFT.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from edgellm.bench.records import RequestRecord


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value: float | None, fmt: str = "{:.0f}") -> str:
    return "-" if value is None else fmt.format(value)


def turn_rows(records: Sequence[RequestRecord]) -> tuple[list[str], list[list[str]]]:
    """One row per turn of the measured, successful chat requests; none without turns or
    without any cache report."""
    done = [r for r in records if r.ok and not r.warmup and not r.cancelled]
    if not done or not any(r.cached_tokens is not None for r in done):
        return [], []
    if max(r.turn for r in done) == 0:
        return [], []
    header = [
        "turn",
        "requests",
        "prompt tokens",
        "cached",
        "prefilled",
        "cached share",
        "TTFT s",
    ]
    rows = []
    for turn in sorted({r.turn for r in done}):
        rs = [r for r in done if r.turn == turn]
        prompt = [r.prompt_tokens for r in rs if r.prompt_tokens is not None]
        cached = [r.cached_tokens for r in rs if r.cached_tokens is not None]
        prefilled = [r.prefilled_tokens for r in rs if r.prefilled_tokens is not None]
        share = sum(cached) / sum(prompt) if prompt and sum(prompt) and cached else None
        rows.append(
            [
                str(turn + 1),
                str(len(rs)),
                _fmt(_mean(prompt)),
                _fmt(_mean(cached)),
                _fmt(_mean(prefilled)),
                _fmt(share, "{:.0%}"),
                _fmt(_mean([r.ttft_s for r in rs if r.ttft_s is not None]), "{:.3f}"),
            ]
        )
    return header, rows


def print_turns(console: Console, run_dir: Path) -> None:
    from edgellm.bench.run import load_records
    from edgellm.report.tables import print_rows

    records = load_records(run_dir / "records.jsonl")
    for repeat in sorted(run_dir.glob("repeat-*")):  # --repeat N: every run's requests
        records += load_records(repeat / "records.jsonl")
    header, rows = turn_rows(records)
    if rows:
        print_rows(
            console, "prompt tokens per turn (means; cached: reused by the server)", header, rows
        )
