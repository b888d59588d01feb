"""`--repeat N`: the node bench starts is restarted between runs, or kept, by option; a server
given by --url cannot be restarted by bench, and asking for it is refused before anything runs."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgellm.bench import run as bench_run
from edgellm.bench.run import BenchConfig, run_bench
from edgellm.bench.workloads import WorkloadOptions
from edgellm.cli import app
from tests.unit.bench.fakes import FakeBehaviour, FakeServer, start_fake

FAST = FakeBehaviour(ttft_s=0.01, itl_s=0.002, tokens=4)


def _local_servers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand in for the local node bench starts: a fresh fake server per start, logged."""
    events: list[str] = []

    @contextlib.contextmanager
    def server(cfg: BenchConfig, run_dir: Path) -> Iterator[tuple[str, int | None, Any]]:
        fake = start_fake(FAST)
        events.append(f"start {fake.url}")
        try:
            yield fake.url, None, {}
        finally:
            fake.stop()
            events.append(f"stop {fake.url}")

    monkeypatch.setattr(bench_run, "_server", server)
    return events


def _cfg(**overrides: object) -> BenchConfig:
    settings: dict[str, object] = {
        "model": "fake",
        "url": None,
        "workload_options": WorkloadOptions(conversations=1),
        "warmup": 0,
        "max_tokens": 4,
        "sample_interval_s": 0.05,
        "repeat": 3,
    } | overrides
    return BenchConfig(**settings)  # type: ignore[arg-type]


def test_the_local_node_is_restarted_between_repeats(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events = _local_servers(monkeypatch)
    summary = run_bench(_cfg(restart_between=True), tmp_path / "run")
    assert summary.repeats is not None and summary.repeats.n == 3
    # each run on its own server, stopped before the next one starts
    assert [e.split()[0] for e in events] == ["start", "stop"] * 3
    assert len({e.split()[1] for e in events}) == 3
    for k in range(3):
        assert events[2 * k].split()[1] == events[2 * k + 1].split()[1]


def test_one_node_serves_every_repeat_without_restarts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    events = _local_servers(monkeypatch)
    summary = run_bench(_cfg(restart_between=False), tmp_path / "run")
    assert summary.repeats is not None and summary.repeats.n == 3
    assert [e.split()[0] for e in events] == ["start", "stop"]
    for k in (1, 2, 3):  # every repeat measured on it
        assert (tmp_path / "run" / f"repeat-{k:02d}" / "records.jsonl").stat().st_size > 0


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_a_url_server_is_not_restarted_and_asking_is_refused(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    runner = CliRunner()
    common = ["bench", "--model", "fake", "--url", fake_server.url, "--conversations", "1",
              "--warmup", "0", "--max-tokens", "4", "--repeat", "2", "--no-report"]  # fmt: skip
    refused = runner.invoke(app, [*common, "--restart-between", "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2 and "restart" in refused.output
    assert not (tmp_path / "a").exists()
    ran = runner.invoke(app, [*common, "--out", str(tmp_path / "b")])
    assert ran.exit_code == 0, ran.output
    assert json.loads((tmp_path / "b" / "config.json").read_text())["restart_between"] is False


@pytest.mark.parametrize("fake_server", [FAST], indirect=True)
def test_resume_completes_the_interrupted_repeat_only(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cfg = _cfg(url=fake_server.url, repeat=2, workload_options=WorkloadOptions(conversations=2))
    run_bench(cfg, run)
    first, second = run / "repeat-01", run / "repeat-02"
    kept = (first / "records.jsonl").read_text()

    def pairs() -> list[tuple[str, int]]:
        lines = (second / "records.jsonl").read_text().splitlines()
        records = [json.loads(x) for x in lines]
        return [(r["conversation_id"], r["turn"]) for r in records if not r["warmup"]]

    full = sorted(pairs())
    # the second repeat interrupted after its first conversation: what Ctrl-C leaves behind
    # (finalize writes its summary.json on the way out, but it never finished)
    done = (second / "sessions.done").read_text().split()
    (second / "sessions.done").write_text(done[0] + "\n")
    lines = (second / "records.jsonl").read_text().splitlines()
    cut = [x for x in lines if json.loads(x)["conversation_id"] == done[0]]
    (second / "records.jsonl").write_text("".join(x + "\n" for x in cut))
    (second / "finished").unlink()
    assert (second / "summary.json").exists() and len(pairs()) < len(full)
    run_bench(cfg, run, resume=True)
    assert (first / "records.jsonl").read_text() == kept  # a finished repeat is not rerun
    assert sorted(pairs()) == full  # the cut conversation replayed once, not twice
    assert (second / "finished").exists()
