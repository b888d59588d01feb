"""Per-turn prompt tokens: what the server reused and what it prefilled."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from edgellm.bench.records import RequestRecord, ServerTimings
from edgellm.report.turns import print_turns, turn_rows


def record(turn: int, prompt: int, cache_n: int | None, **extra: object) -> RequestRecord:
    server = None
    if cache_n is not None:
        server = ServerTimings(source="edgellm", cache_n=cache_n, prompt_n=prompt - cache_n)
    return RequestRecord(
        request_id=turn,
        model="m",
        turn=turn,
        start_s=0.0,
        prompt_tokens=prompt,
        ttft_s=0.1 * (turn + 1),
        server=server,
        **extra,  # type: ignore[arg-type]
    )


def test_each_turn_shows_what_was_reused_and_prefilled() -> None:
    records = [record(0, 100, 0), record(0, 120, 0), record(1, 300, 220), record(1, 320, 0)]
    header, rows = turn_rows(records)
    assert header[:5] == ["turn", "requests", "prompt tokens", "cached", "prefilled"]
    assert rows[0][:6] == ["1", "2", "110", "0", "110", "0%"]
    assert rows[1][:6] == ["2", "2", "310", "110", "200", "35%"]


def test_warmups_failures_and_single_turn_runs_give_no_table() -> None:
    assert turn_rows([record(0, 100, 0), record(0, 50, 0)]) == ([], [])  # one turn only
    assert turn_rows([record(0, 100, None), record(1, 200, None)]) == ([], [])  # no report
    kept = [record(0, 100, 0), record(1, 200, 150)]
    dropped = [record(1, 999, 0, ok=False), record(1, 999, 0, warmup=True)]
    rows = turn_rows(kept + dropped)[1]
    assert [r[1] for r in rows] == ["1", "1"]
    assert rows[1][2] == "200"


def test_records_carry_cached_and_prefilled_tokens(tmp_path: Path) -> None:
    r = record(1, 300, 220)
    assert (r.cached_tokens, r.prefilled_tokens) == (220, 80)
    dumped = r.model_dump(mode="json")
    assert dumped["cached_tokens"] == 220 and dumped["prefilled_tokens"] == 80
    assert RequestRecord.model_validate_json(r.model_dump_json()).cached_tokens == 220
    unknown = record(1, 300, None)
    assert (unknown.cached_tokens, unknown.prefilled_tokens) == (None, None)
    lines = [x.model_dump_json() for x in (record(0, 100, 0), r)]
    (tmp_path / "records.jsonl").write_text("\n".join(lines) + "\n")
    console = Console(record=True, width=120)
    print_turns(console, tmp_path)
    text = console.export_text()
    assert "prompt tokens per turn" in text and "220" in text
