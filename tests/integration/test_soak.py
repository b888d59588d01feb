"""A short soak (`benchmarks/soak.py`): the gateway and two SmolLM2 nodes at saturation for a
minute and a half, with streams, non-streams, clients leaving mid-answer, bad requests and one
node SIGKILLed under load and restarted. Nothing accepted is lost, nothing is left busy, and no
process grows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from benchmarks.soak import Growth, Restart, SoakConfig, SoakReport, Targets, failures, run_soak

# ~3 minutes on a quiet machine; a node restart on a starved one took up to 135 s
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

# Thresholds of the short run. RSS: each process is compared with itself after 30 s of load (a
# restarted node after its priming and the rest of segment 1). The gateway is held to 5 %, as in
# the 30-minute run (it grew 0.0-0.1 % in every run). A node is still warming up then: fresh at
# ~270 MB, it levels off at 300-310 MB after a few hundred requests (the 30-minute run: +0.7 and
# +1.0 % over its last 20 minutes), and short runs measured +2.6 to +6.1 % from the 30 s
# snapshot, so 10 % here; a leak of 100 kB per request (~150 requests per node in this run) still
# takes a node past it. The 30-minute run holds the nodes to 5 % (docs/benchmarks.md, "Soak").
# Descriptors: counted when every idle keep-alive connection has expired, so the same sockets
# are open at both snapshots; no tolerance.
SHORT = SoakConfig(seconds=60, warmup=30, restarts=1)
TARGETS = Targets(rss_growth_pct=5.0, node_rss_growth_pct=10.0, fd_growth=0)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> SoakReport:
    return run_soak(replace(SHORT, log_dir=tmp_path_factory.mktemp("soak")))


def test_soak_meets_every_target(report: SoakReport) -> None:
    assert failures(report, TARGETS) == [], f"process logs in {report.log_dir}"


def test_soak_saturated_the_nodes_and_killed_one_under_load(report: SoakReport) -> None:
    """The targets mean something only if the run did what it says."""
    assert report.served["plain"] >= 10 and report.served["stream"] >= 10
    assert report.tally["outcomes"]["abandon:left"] >= 10
    assert report.tally["outcomes"]["disconnect:left"] >= 1
    assert report.tally["outcomes"]["bad:as-expected"] >= 50
    [restart] = report.restarts
    assert restart.outstanding_at_kill >= 2, "the node was killed with requests in flight"
    assert restart.marked_down_s is not None
    assert {g.process for g in report.growth} == {"gateway", "node1", "node2"}
    assert next(g for g in report.growth if g.process == "node1").baseline == "B"


# The checker itself, on made-up reports: each target can fail.


def _report(**changes: object) -> SoakReport:
    base = SoakReport(
        config={"restarts": 1},
        wall_s=1.0,
        served={"plain": 1, "stream": 1},
        tally={"outcomes": {"plain:ok": 1}, "losses": [], "unexplained_errors": []},
        restarts=[Restart("node1", 1.0, 2, 0.5, 5.0, 6.0)],
        growth=[Growth("gateway", "A", 100.0, 101.0, 1.0, 18, 18)],
        node_gauges={"node1": {"edgellm_requests_running": 0, "edgellm_queue_depth": 0}},
        gateway_outstanding={"http://127.0.0.1:1/v1": 0},
        log_dir=str(Path("/nonexistent")),
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def test_checker_passes_a_clean_report() -> None:
    assert failures(_report(), TARGETS) == []


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"tally": {"outcomes": {}, "losses": ["plain: 502"], "unexplained_errors": []}}, "lost"),
        (
            {"tally": {"outcomes": {}, "losses": [], "unexplained_errors": ["stream: boom"]}},
            "error events",
        ),
        (
            {"tally": {"outcomes": {"plain:refused": 1}, "losses": [], "unexplained_errors": []}},
            "refused",
        ),
        (
            {
                "tally": {
                    "outcomes": {"bad:unexpected:x:500": 1},
                    "losses": [],
                    "unexplained_errors": [],
                }
            },
            "unexpected status",
        ),
        ({"growth": [Growth("node2", "A", 100.0, 111.0, 11.0, 17, 17)]}, "RSS grew"),
        ({"growth": [Growth("gateway", "A", 100.0, 106.0, 6.0, 18, 18)]}, "RSS grew"),
        ({"growth": [Growth("gateway", "A", 100.0, 100.0, 0.0, 18, 19)]}, "descriptors"),
        (
            {"node_gauges": {"node1": {"edgellm_requests_running": 1, "edgellm_queue_depth": 0}}},
            "running",
        ),
        (
            {"node_gauges": {"node1": {"edgellm_requests_running": 0, "edgellm_queue_depth": 2}}},
            "queue",
        ),
        ({"node_gauges": {"node1": {}}}, "running"),
        ({"gateway_outstanding": {"http://127.0.0.1:1/v1": 1}}, "outstanding"),
        ({"restarts": []}, "restarts done"),
    ],
)
def test_checker_flags_each_missed_target(changes: dict[str, object], words: str) -> None:
    missed = failures(_report(**changes), TARGETS)
    assert len(missed) >= 1 and any(words in line for line in missed), missed
