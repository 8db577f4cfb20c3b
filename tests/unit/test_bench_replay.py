"""The load report's arithmetic on hand-made samples (the real loop runs in
tests/integration/test_replay_eval.py)."""

from __future__ import annotations

import os

import pytest

from intentstream.perf.bench_replay import Run, Sample, _proc, _rates, stamped, summarise


def sample(t: float, applied: int, cpu: float, lag: int = 0) -> Sample:
    return Sample(t, applied, applied, lag, 5.0, 9.0, 0, cpu, 120.0)


def test_each_users_publish_times_are_kept_in_order() -> None:
    run = Run()
    out = list(stamped([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")], run))
    assert out == [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    assert run.published == 3
    assert len(run.sent_at[b"a"]) == 2
    assert run.sent_at[b"a"][0] <= run.sent_at[b"a"][1]


def test_rates_between_samples() -> None:
    assert _rates([0.0, 1.0, 3.0], [0, 100, 500]) == [100.0, 200.0]


def test_summary_figures_come_from_the_samples_and_the_worker() -> None:
    run = Run(done_publishing=2.0)
    run.samples = [sample(0.0, 0, 10.0, lag=0), sample(1.0, 600, 11.0, lag=400), sample(2.0, 1000, 12.0)]
    run.refreshed = [(1.5, 0.5), (2.0, 1.5)]
    stats = {
        "counters": {
            "applied": 1000,
            "first_batch_at": 100.0,
            "last_batch_at": 102.0,
            "triggers": {"every_n_events": 150, "drift": 50},
            "dead_lettered": {"malformed_json": 1},
        },
        "freshness_ms_all": {"p50": 4.0, "p95": 8.0, "p99": 9.0, "max": 12.0, "samples": 1000},
        "replan_queue": {"offered": 200, "sent": 20, "superseded": 100, "shed": 0, "pending": 80},
    }
    metrics = [
        ("intentstream_plans_total", {"outcome": "written"}, 3.0),
        ("intentstream_plans_total", {"outcome": "failed"}, 1.0),
        ("intentstream_llm_tokens_total", {"stage": "planner", "kind": "prompt"}, 3000.0),
        ("intentstream_llm_tokens_total", {"stage": "experts", "kind": "prompt"}, 1000.0),
        ("intentstream_llm_tokens_total", {"stage": "planner", "kind": "prompt_cached"}, 2000.0),
        ("intentstream_llm_tokens_total", {"stage": "planner", "kind": "completion"}, 400.0),
    ]
    report = summarise(run, stats, metrics, sent=1000)
    assert report["publish_events_per_s"] == 500
    assert report["sustained_events_per_s"] == 500
    assert report["caught_up_after_s"] == 2.0
    assert report["consumer_lag_max"] == 400
    assert report["replans_decided_per_1000_events"] == 200.0
    assert report["prompt_tokens_per_replan"] == 1000  # 4,000 over 4 plans; cached ones not counted twice
    assert report["plans"] == {"written": 3, "failed": 1, "judged_bad": 0, "stale": 0, "skipped": 0}
    assert report["generated_tokens_per_replan"] == 100
    assert report["worker_cpu_s_per_1000_events"] == 2.0
    assert report["record_freshness_s"]["records"] == 2
    assert report["record_freshness_s"]["p50"] == pytest.approx(1.0)


def test_cpu_and_peak_memory_of_a_live_process() -> None:
    cpu, peak_mb = _proc(os.getpid())
    assert cpu > 0
    assert peak_mb > 10
