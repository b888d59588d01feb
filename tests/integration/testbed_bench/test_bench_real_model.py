"""bench and eval against real SmolLM2 servers on loopback (short outputs, few items)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgellm.bench.run import BenchConfig, run_bench
from edgellm.bench.workloads import WorkloadOptions
from edgellm.cli import app
from tests.integration.servers import RunningServer

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"


def _records(run: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]


def test_oasst_replay_uses_the_models_own_answers(
    smol_server: RunningServer, tmp_path: Path
) -> None:
    cfg = BenchConfig(
        model=MODEL,
        url=smol_server.base_url,
        workload_options=WorkloadOptions(conversations=1),
        max_tokens=8,
        warmup=1,
        sample_interval_s=0.2,
    )
    summary = run_bench(cfg, tmp_path)
    main = [r for r in _records(tmp_path) if not r["warmup"]]
    assert [r["turn"] for r in main] == [0, 1, 2] and all(r["ok"] for r in main)
    assert all(r["server"]["source"] == "edgellm" for r in main)  # type: ignore[index]
    # the history grows turn by turn; the server reuses it (cache_n) as a prefix
    prompts = [int(r["prompt_tokens"]) for r in main]  # type: ignore[call-overload]
    assert prompts[0] < prompts[1] < prompts[2]
    assert int(main[1]["server"]["cache_n"]) > 0  # type: ignore[index]
    assert all(0 < int(r["completion_tokens"]) <= 8 for r in main)  # type: ignore[call-overload]
    assert summary.table[0].requests == 3 and summary.server_timings_source == ["edgellm"]
    model = json.loads((tmp_path / "model.json").read_text())
    assert len(model["sha256"]) == 64 and model["card"]["meta"]["n_vocab"] > 0


def test_synthetic_exact_prompt_and_output_lengths(
    smol_server: RunningServer, tmp_path: Path
) -> None:
    cfg = BenchConfig(
        model=MODEL,
        url=smol_server.url,
        workload="synthetic",
        workload_options=WorkloadOptions(
            prompt_tokens=[32, 100], requests_per_length=1, output_tokens=6
        ),
        warmup=0,
    )
    run_bench(cfg, tmp_path)
    records = _records(tmp_path)
    # SmolLM2 adds no BOS: the server counts exactly the tokens asked for
    assert [r["prompt_tokens"] for r in records] == [32, 100]
    assert [r["completion_tokens"] for r in records] == [6, 6]


def test_eval_winogrande_few_items(smol_server: RunningServer, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "winogrande",
            "--model",
            MODEL,
            "--url",
            smol_server.base_url,
            "--limit",
            "4",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert all(len(r["choice_logprobs"]) == 2 and r["choice_tokens"][0] > 0 for r in rows)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["accuracy"]["n"] == 4
    assert summary["accuracy"]["correct"] == sum(r["correct"] for r in rows)


def test_bench_cli_starts_its_own_node(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "bench",
            "--workload",
            "oasst",
            "--conversations",
            "1",
            "--model",
            MODEL,
            "--max-tokens",
            "4",
            "--threads",
            "2",
            "--ctx",
            "2048",
            "--out",
            str(run),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len([r for r in _records(run) if not r["warmup"]]) == 3
    samples = (run / "samples.jsonl").read_text().splitlines()
    assert samples and json.loads(samples[0])["source"].startswith("pid:")
    assert (run / "report.html").exists() and (run / "plots" / "latency_cdf.png").exists()
    env = json.loads((run / "environment.json").read_text())
    assert env["packages"]["llama-cpp-python"] and env["machine"]["logical_cpus"]
