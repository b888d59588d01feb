"""`edgellm report RUN_A RUN_B --markdown`: one paper-style table of several runs, each row the
figures of that run's own summary, and the CV-by-context table beside it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgellm.bench.run import BenchConfig, run_bench
from edgellm.bench.workloads import WorkloadOptions
from edgellm.cli import app
from tests.unit.bench.fakes import FakeBehaviour, FakeServer

FAST = FakeBehaviour(ttft_s=0.01, itl_s=0.002, tokens=5)


def _run(url: str, tmp_path: Path, name: str, requests: int) -> Path:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"p{k} " * k}) + "\n" for k in range(1, 9)))
    cfg = BenchConfig(
        model="fake",
        url=url,
        workload="file",
        workload_options=WorkloadOptions(path=prompts),
        warmup=0,
        max_tokens=5,
        max_requests=requests,
        sample_interval_s=0.02,
    )
    run_bench(cfg, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_markdown_table_has_one_row_per_run(fake_server: FakeServer, tmp_path: Path) -> None:
    a = _run(fake_server.url, tmp_path, "run-a", 3)
    b = _run(fake_server.url, tmp_path, "run-b", 5)
    result = CliRunner().invoke(app, ["report", str(a), str(b), "--markdown"])
    assert result.exit_code == 0, result.output
    main, cv = result.output.strip().split("\n\n")
    header, rule, *rows = main.splitlines()
    assert header.startswith("| run | model | requests | errors | generation tok/s |")
    assert rule.count("---") == header.count("|") - 1
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [c[:4] for c in cells] == [["run-a", "fake", "3", "0"], ["run-b", "fake", "5", "0"]]
    for name, row in zip(("run-a", "run-b"), cells, strict=True):
        table = json.loads((tmp_path / name / "summary.json").read_text())["table"][0]
        assert row[4] == f"{table['generation_tps']:.1f}"
    cv_lines = cv.splitlines()
    assert cv_lines[0].startswith("| run | prompt tokens | n | decode tok/s |")
    assert {line.split("|")[1].strip() for line in cv_lines[2:]} == {"run-a", "run-b"}
    # every request falls in one context bucket: the bucket counts add up to each run's requests
    for name, requests in (("run-a", 3), ("run-b", 5)):
        counts = [int(line.split("|")[3]) for line in cv_lines[2:] if f"| {name} |" in line]
        assert sum(counts) == requests
    # without --markdown each run prints its own terminal tables instead
    plain = CliRunner().invoke(app, ["report", str(a), str(b)])
    assert plain.exit_code == 0 and "| run | model |" not in plain.output
    assert plain.output.count("per-model results") == 2


def test_compare_takes_one_run(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "records.jsonl").write_text("")
    args = ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--compare", str(tmp_path / "c")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--compare takes one RUN_DIR" in result.output
