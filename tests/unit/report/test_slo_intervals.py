"""SLO attainments carry their Wilson interval into the summary and the tables."""

from __future__ import annotations

from edgellm.bench.records import RequestRecord
from edgellm.bench.stats import wilson
from edgellm.bench.summary import summarize
from edgellm.report.tables import slo_rows


def _record(i: int, ttft: float, e2e: float, ok: bool = True) -> RequestRecord:
    return RequestRecord(
        request_id=i, model="m", stage="main", start_s=float(i), ok=ok, ttft_s=ttft, e2e_s=e2e,
        completion_tokens=4,
    )  # fmt: skip


def test_attainment_intervals_are_wilson_of_the_counts() -> None:
    # 20 requests: 17 meet both bounds, 2 miss ttft only, 1 errored (a miss of both)
    records = [_record(i, 0.1, 1.0) for i in range(17)]
    records += [_record(17, 3.0, 4.0), _record(18, 2.5, 2.6), _record(19, 0.1, 1.0, ok=False)]
    summary = summarize(records, [], slo={"ttft": 2.0, "e2e": 5.0})
    assert summary.slo_intervals["all"] == wilson(17, 20)
    assert summary.slo_intervals["all:ttft"] == wilson(17, 20)
    assert summary.slo_intervals["all:e2e"] == wilson(19, 20)
    assert summary.slo_intervals["all:e2e"] != wilson(20, 20)  # the errored one is a miss
    _, rows = slo_rows(summary)
    e2e = wilson(19, 20)
    assert rows[0][6] == f"85.0% ({wilson(17, 20).low * 100:.1f}-{wilson(17, 20).high * 100:.1f})"
    assert rows[0][8] == f"95.0% ({e2e.low * 100:.1f}-{e2e.high * 100:.1f})"
    assert summarize(records, []).slo_intervals == {}


def test_no_interval_without_counted_requests() -> None:
    cancelled = RequestRecord(request_id=0, model="m", start_s=0.0, ok=False, cancelled=True)
    summary = summarize([cancelled], [], slo={"ttft": 1.0})
    assert summary.slo_intervals["all"].value is None
    _, rows = slo_rows(summary)
    assert rows[0][6] == "-"
