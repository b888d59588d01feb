"""The report's figures are recomputed here from records.jsonl/samples.jsonl, independently."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from edgellm.bench.run import BenchConfig, run_bench
from edgellm.bench.workloads import WorkloadOptions
from edgellm.report.html import write_comparison, write_report
from tests.unit.bench.fakes import FakeBehaviour, FakeServer

FAST = FakeBehaviour(ttft_s=0.05, itl_s=0.01, tokens=6)


def _run(url: str, run_dir: Path, **overrides: object) -> None:
    settings: dict[str, object] = {
        "model": "fake",
        "url": url,
        "workload": "oasst",
        "workload_options": WorkloadOptions(conversations=2),
        "warmup": 1,
        "sample_interval_s": 0.05,
        "max_tokens": 6,
    } | overrides
    run_bench(BenchConfig(**settings), run_dir)  # type: ignore[arg-type]


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_report_figures_equal_raw_records(fake_server: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(fake_server.url, run)
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    warm = [r for r in records if r["warmup"]]
    main = [r for r in records if not r["warmup"]]
    assert len(warm) == 1
    # oasst threads of 5 turns have 3 user turns; 6 turns also 3
    assert len(main) == 6 and {r["turn"] for r in main} == {0, 1, 2}
    # the model's own answer is the history: turn 1's prompt holds turn 0's user text + answer
    assert all(r["output"] == "".join(f"t{i} " for i in range(6)) for r in main)

    report = write_report(run)
    summary = json.loads((run / "summary.json").read_text())
    row = summary["table"][0]
    ttft = [r["ttft_s"] for r in main]
    e2e = [r["e2e_s"] for r in main]
    tokens = sum(r["completion_tokens"] for r in main)
    span = max(r["start_s"] + r["e2e_s"] for r in main) - min(r["start_s"] for r in main)
    assert row["requests"] == 6 and row["errors"] == 0
    assert row["ttft_s_mean"] == pytest.approx(np.mean(ttft))
    assert row["ttft_s_p99"] == pytest.approx(np.percentile(ttft, 99))
    assert row["latency_s_p50"] == pytest.approx(np.median(e2e))
    assert row["generation_tps"] == pytest.approx(tokens / span)
    assert row["completion_tokens_total"] == 36
    # server-reported decode rate is preferred: the fake reports exactly 1 / itl
    assert row["decode_tps_mean"] == pytest.approx(100.0)
    itl = [g * 1e3 for r in main for g in r["itl_s"]]
    assert summary["itl_ms"]["p50"] == pytest.approx(np.median(itl))
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["rss_bytes"] == 123456789 for s in samples)
    assert row["memory_gb_peak"] == pytest.approx(0.123456789)

    with (run / "table.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert float(table[0]["ttft_s_mean"]) == pytest.approx(row["ttft_s_mean"])
    html = report.read_text()
    assert f"{row['ttft_s_mean']:.3f}" in html and f"{row['generation_tps']:.1f}" in html
    for png in ("throughput.png", "latency_cdf.png", "resources.png", "cv_context.png"):
        assert (run / "plots" / png).stat().st_size > 1000


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_resume_skips_finished_conversations(fake_server: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    _run(fake_server.url, run, max_requests=4)  # stops inside the 2nd conversation
    done = (run / "sessions.done").read_text().split()
    assert len(done) == 1
    cfg = BenchConfig.model_validate_json((run / "config.json").read_text())
    cfg.max_requests = None
    run_bench(cfg, run, resume=True)
    records = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]
    main = [r for r in records if not r["warmup"]]
    # the finished conversation is kept once, the cut one replayed from its first turn
    assert sorted((r["conversation_id"], r["turn"]) for r in main) == sorted(
        {(r["conversation_id"], r["turn"]) for r in main}
    )
    assert len(main) == 6
    assert len(set((run / "sessions.done").read_text().split())) == 2


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_compare_two_runs(fake_server: FakeServer, tmp_path: Path) -> None:
    _run(fake_server.url, tmp_path / "a", max_requests=2)
    _run(fake_server.url, tmp_path / "b", max_requests=2, load="concurrent", concurrency=2)
    out = write_comparison(tmp_path / "a", tmp_path / "b", tmp_path / "cmp")
    html = out.read_text()
    assert "synchronous" in html and "concurrent-2" in html
    assert (tmp_path / "cmp" / "compare_latency.png").exists()
