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


def test_no_measured_synthetic_request_reuses_a_cached_prefix(
    smol_server: RunningServer, tmp_path: Path
) -> None:
    cfg = BenchConfig(
        model=MODEL,
        url=smol_server.url,
        workload="synthetic",
        workload_options=WorkloadOptions(
            prompt_tokens=[64], requests_per_length=2, output_tokens=4
        ),
        warmup=1,
    )
    run_bench(cfg, tmp_path)
    records = _records(tmp_path)
    measured = [r for r in records if not r["warmup"]]
    assert len(measured) == 2 and len(records) == 3
    # a warm-up that re-sent a measured prompt made the next one a hit (cache_n 63, prompt_n 1)
    assert [r["server"]["cache_n"] for r in measured] == [0, 0]  # type: ignore[index]
    assert [r["server"]["prompt_n"] for r in measured] == [64, 64]  # type: ignore[index]


def test_synthetic_length_includes_the_bos_gemma_adds(
    model_paths: dict[str, Path], tmp_path: Path
) -> None:
    from edgellm.config import EngineConfig, ModelConfig
    from tests.integration.servers import start_server

    gemma = ModelConfig(
        name="gemma3-270m",
        source="gemma3-270m",
        engine=EngineConfig(n_ctx=512, n_threads=2),
    )
    server = start_server([gemma])
    try:
        cfg = BenchConfig(
            model="gemma3-270m",
            url=server.url,
            workload="synthetic",
            workload_options=WorkloadOptions(
                prompt_tokens=[64], requests_per_length=1, output_tokens=2
            ),
            warmup=0,
        )
        run_bench(cfg, tmp_path)
    finally:
        server.stop()
    [record] = _records(tmp_path)
    assert record["prompt_tokens"] == 64  # BOS + 63 tokens of text


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
