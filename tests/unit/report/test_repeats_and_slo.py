"""Repeated runs (means with intervals, Welch on repeats vs bootstrap without), SLO figures in
the summary, report and CLI, and the warning for runs too short for their resource figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgellm.bench.run import BenchConfig, run_bench
from edgellm.bench.stats import mean_ci
from edgellm.bench.workloads import WorkloadError, WorkloadOptions
from edgellm.cli import app
from edgellm.report.html import comparison_rows, write_report
from edgellm.report.tables import repeat_rows
from tests.unit.bench.fakes import FakeBehaviour, FakeServer

FAST = FakeBehaviour(ttft_s=0.05, itl_s=0.01, tokens=6)


def _cfg(url: str, **overrides: object) -> BenchConfig:
    settings: dict[str, object] = {
        "model": "fake",
        "url": url,
        "workload_options": WorkloadOptions(conversations=1),
        "warmup": 0,
        "sample_interval_s": 0.05,
        "max_tokens": 6,
    } | overrides
    return BenchConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_repeats_report_means_with_t_intervals(fake_server: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    summary = run_bench(_cfg(fake_server.url, repeat=3, slo={"ttft": 1.0}), run)
    parts = [run / f"repeat-{i:02d}" for i in (1, 2, 3)]
    assert all((p / "records.jsonl").exists() for p in parts)
    assert summary.repeats is not None and summary.repeats.n == 3
    per_run = [json.loads((p / "summary.json").read_text())["table"][0] for p in parts]
    [row] = summary.repeats.rows
    ttft = row.figures["ttft_s_mean"]
    assert ttft == mean_ci([r["ttft_s_mean"] for r in per_run])
    assert ttft.n == 3 and ttft.low is not None and ttft.low <= ttft.mean <= (ttft.high or 0)
    assert summary.table[0].ttft_s_mean == ttft.mean  # the table holds the means
    assert summary.table[0].requests == sum(r["requests"] for r in per_run)  # pooled counts
    assert summary.repeats.slo["attainment"].mean == 1.0
    stored = json.loads((run / "summary.json").read_text())
    assert stored["repeats"]["n"] == 3
    html = write_report(run).read_text()
    assert "3 repeated runs" in html and "ttft_s_mean" in html
    header, rows = repeat_rows(summary)
    by_figure = {r[header.index("figure")]: r for r in rows}
    assert by_figure["ttft_s_mean"] == [
        "fake", row.stage, "ttft_s_mean", "3", f"{ttft.mean:.4g}", f"{ttft.low:.4g}",
        f"{ttft.high:.4g}", f"{ttft.std:.3g}",
    ]  # fmt: skip
    assert by_figure["attainment"][:5] == ["", "all", "attainment", "3", "1"]


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_compare_names_its_test(fake_server: FakeServer, tmp_path: Path) -> None:
    run_bench(_cfg(fake_server.url, repeat=2), tmp_path / "ra")
    run_bench(_cfg(fake_server.url, repeat=2), tmp_path / "rb")
    method, header, rows = comparison_rows(tmp_path / "ra", tmp_path / "rb")
    assert method.startswith("Welch's t-test on per-run values (2 vs 2 repeats)")
    assert any(r[2] == "ttft_s_mean" for r in rows) and header[-1] == "significant"
    run_bench(_cfg(fake_server.url), tmp_path / "a")
    run_bench(_cfg(fake_server.url, workload_options=WorkloadOptions(conversations=2)),
              tmp_path / "b")  # fmt: skip
    method, _, rows = comparison_rows(tmp_path / "a", tmp_path / "b")
    assert method.startswith("bootstrap of per-request values")
    assert {r[2] for r in rows} >= {"ttft_s", "latency_s", "decode_tps"}
    result = CliRunner().invoke(
        app, ["report", str(tmp_path / "a"), "--compare", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    assert "bootstrap of per-request values" in result.output
    assert (tmp_path / "compare-a-vs-b" / "compare.html").exists()


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_slo_in_summary_cli_and_report(fake_server: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["bench", "--url", fake_server.url, "--model", "fake", "--conversations", "1",
         "--max-tokens", "6", "--warmup", "0", "--slo", "ttft=1s,e2e=10ms", "--out", str(run)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "summary.json").read_text())
    overall = summary["slo"]["overall"]
    # TTFT ~0.05 s meets 1 s; e2e ~0.1 s misses 10 ms: nothing meets both
    assert overall["per_constraint"]["ttft"] == 1.0 and overall["per_constraint"]["e2e"] == 0.0
    assert overall["attainment"] == 0.0 and overall["goodput_rps"] == 0.0
    assert overall["counted"] == 3
    assert "SLO attainment and goodput" in result.output
    assert "SLO attainment and goodput" in (run / "report.html").read_text()


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_sweep_report_plots_attainment_against_load(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    cfg = _cfg(fake_server.url, load="sweep", max_requests=3, sweep_points=1, slo={"ttft": 1.0},
               workload_options=WorkloadOptions(conversations=3))  # fmt: skip
    run_bench(cfg, tmp_path / "run")
    write_report(tmp_path / "run")
    assert (tmp_path / "run" / "plots" / "slo_load.png").exists()
    run_bench(_cfg(fake_server.url, slo={"ttft": 1.0}), tmp_path / "one")
    write_report(tmp_path / "one")
    assert not (tmp_path / "one" / "plots" / "slo_load.png").exists()  # one stage: no curve


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_a_run_too_short_for_its_resource_figures_says_so(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    short = run_bench(_cfg(fake_server.url, sample_interval_s=0.5), tmp_path / "short")
    assert short.warnings and "too few for its CPU % and memory" in short.warnings[0]
    fine = run_bench(_cfg(fake_server.url, sample_interval_s=0.01), tmp_path / "fine")
    assert fine.table[0].resource_samples >= 5 and fine.warnings == []


def test_a_bad_workload_file_creates_nothing_and_lists_every_bad_line(tmp_path: Path) -> None:
    bad = tmp_path / "w.jsonl"
    bad.write_text('{"prompt": "ok"}\nnope\n{"x": 1}\n')
    run = tmp_path / "run"
    cfg = _cfg("http://127.0.0.1:9", workload="file", workload_options=WorkloadOptions(path=bad))
    with pytest.raises(WorkloadError, match="2 bad line"):
        run_bench(cfg, run)
    assert not run.exists()
    result = CliRunner().invoke(
        app, ["bench", "--url", "http://127.0.0.1:9", "--workload", "file", "--file", str(bad),
              "--out", str(run)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "w.jsonl:2:" in result.output and "w.jsonl:3:" in result.output
    assert "resume" not in result.output and not run.exists()
