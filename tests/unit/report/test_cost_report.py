"""The edge-or-cloud section end to end: a capacity search against a fake server, then
`edgellm report --cost` (its table, cost.json, the plot) and the errors of bad settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgellm.bench.run import BenchConfig, run_bench
from edgellm.bench.search import SearchSettings
from edgellm.bench.workloads import WorkloadOptions
from edgellm.cli import app
from tests.unit.bench.fakes import FakeBehaviour, FakeServer

# 0.05 s per request, one at a time: 20 requests/s; the walk's 2/s passes with a wide margin
SERIAL = FakeBehaviour(ttft_s=0.03, itl_s=0.004, tokens=6, serial=True)


def _prompts(tmp_path: Path) -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"p{k}"}) + "\n" for k in range(20)))
    return prompts


def _cfg(url: str, prompts: Path, **overrides: object) -> BenchConfig:
    settings: dict[str, object] = {
        "model": "fake",
        "url": url,
        "workload": "file",
        "workload_options": WorkloadOptions(path=prompts),
        "warmup": 0,
        "max_tokens": 6,
        "sample_interval_s": 0.02,
    } | overrides
    return BenchConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("fake_server", [SERIAL], indirect=True)
def test_search_run_gets_the_cost_section(fake_server: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    search = SearchSettings(target=0.9, precision=10.0, max_steps=1, requests=6)
    cfg = _cfg(fake_server.url, _prompts(tmp_path), load="search", rate=2.0, slo={"e2e": 2.0})
    run_bench(cfg.model_copy(update={"search": search}), run)
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert "edge or cloud" in result.output
    cost = json.loads((run / "cost.json").read_text())
    # one passing step at 2 sessions/s of one request each: 2 requests/s; defaults elsewhere
    assert cost["inputs"]["capacity_rps"] == pytest.approx(2.0)
    assert cost["inputs"]["capacity_source"] == "capacity search"
    assert cost["config"]["cloud_output_usd_per_mtok"] == 0.6
    assert "Edge or cloud" in (run / "report.html").read_text()
    assert (run / "plots" / "cost_rate.png").stat().st_size > 1000
    base = cost["crossover_rps"]
    dear = runner.invoke(
        app, ["report", str(run), "--cost", "cloud_output_usd_per_mtok=6,devices=2"]
    )
    assert dear.exit_code == 0, dear.output
    cost = json.loads((run / "cost.json").read_text())
    assert cost["capacity_rps"] == pytest.approx(4.0)  # two devices
    assert base is not None and cost["crossover_rps"] < base  # dearer cloud: the edge wins sooner
    settings = tmp_path / "cost.yaml"
    settings.write_text("utilisation: 0.5\ncloud_name: other\n")
    from_file = runner.invoke(app, ["report", str(run), "--cost-config", str(settings)])
    assert from_file.exit_code == 0, from_file.output
    assert json.loads((run / "cost.json").read_text())["config"]["utilisation"] == 0.5


@pytest.mark.parametrize("fake_server", [SERIAL], indirect=True)
def test_a_run_without_capacity_needs_one_given(fake_server: FakeServer, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_bench(_cfg(fake_server.url, _prompts(tmp_path), max_requests=4), run)
    runner = CliRunner()
    plain = runner.invoke(app, ["report", str(run)])
    assert plain.exit_code == 0 and not (run / "cost.json").exists()
    assert "Edge or cloud" not in (run / "report.html").read_text()
    missing = runner.invoke(app, ["report", str(run), "--cost", "devices=2"])
    assert missing.exit_code == 2 and "--load search" in missing.output
    given = runner.invoke(app, ["report", str(run), "--cost", "capacity=0.5"])
    assert given.exit_code == 0, given.output
    assert json.loads((run / "cost.json").read_text())["inputs"]["capacity_rps"] == 0.5
    for bad in ("gpus=1", "devices=0", "utilisation=2"):
        result = runner.invoke(app, ["report", str(run), "--cost", bad])
        assert result.exit_code == 2, (bad, result.output)
    unknown = tmp_path / "bad.yaml"
    unknown.write_text("gpus: 1\n")
    result = runner.invoke(app, ["report", str(run), "--cost-config", str(unknown)])
    assert result.exit_code == 2 and "gpus" in result.output
