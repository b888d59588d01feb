from __future__ import annotations

import pytest

from edgellm.bench.timings import parse_server_timings


def test_llama_server_timings() -> None:
    # llama-server's documented `timings` object (tools/server/README.md)
    t = parse_server_timings(
        {
            "timings": {
                "prompt_n": 20,
                "prompt_ms": 100.0,
                "prompt_per_second": 200.0,
                "predicted_n": 50,
                "predicted_ms": 500.0,
                "predicted_per_second": 100.0,
                "cache_n": 4,
            }
        }
    )
    assert t is not None and t.source == "llama-server"
    assert t.prefill_tps == pytest.approx(200.0)
    assert t.decode_tps == pytest.approx(100.0)
    assert t.cache_n == 4


def test_edgellm_timings_are_recognised_by_their_extra_fields() -> None:
    t = parse_server_timings(
        {
            "timings": {
                "prompt_n": 1,
                "prompt_ms": 2.0,
                "predicted_n": 0,
                "predicted_ms": 0.0,
                "queue_ms": 1.5,
                "ttft_ms": 3.0,
            }
        }
    )
    assert t is not None and t.source == "edgellm" and t.queue_ms == 1.5
    assert t.decode_tps is None


def test_ollama_durations_in_nanoseconds() -> None:
    t = parse_server_timings(
        {
            "done": True,
            "total_duration": 5_000_000_000,
            "prompt_eval_count": 26,
            "prompt_eval_duration": 130_000_000,
            "eval_count": 290,
            "eval_duration": 4_700_000_000,
        }
    )
    assert t is not None and t.source == "ollama"
    assert t.prompt_ms == pytest.approx(130.0)
    assert t.prefill_tps == pytest.approx(200.0)
    assert t.decode_tps == pytest.approx(290 / 4.7)


def test_no_timings() -> None:
    assert parse_server_timings({"choices": []}) is None
    assert parse_server_timings({"timings": "garbage"}) is None
