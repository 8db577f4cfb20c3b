"""The load report's arithmetic on hand-made samples (the real loop runs in
tests/integration/test_replay_eval.py)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from intentstream.perf.bench_replay import (
    Run,
    Sample,
    _proc,
    _rates,
    freshness_series,
    record_ages,
    stamped,
    summarise,
)
from intentstream.perf.compare import compare
from intentstream.reader import Change


def sample(t: float, applied: int, cpu: float, lag: int = 0) -> Sample:
    return Sample(t, applied, applied, lag, 5.0, 9.0, 0, cpu, 120.0)


def test_each_users_publish_times_are_kept_in_order() -> None:
    run = Run()
    sent = [(b"a", b'{"item_text": "x"}'), (b"b", b'{"item_text": ""}'), (b"a", b"3")]
    assert list(stamped(sent, run)) == sent
    assert run.published == 3
    assert len(run.sent_at[b"a"]) == 2
    assert run.sent_at[b"a"][0] <= run.sent_at[b"a"][1]
    assert run.described == {b"a"}  # b's only event names nothing


class ChangesDouble:
    """Test double: an ``IntentReader`` whose changes stream holds these entries."""

    def __init__(self, changes: list[Change]) -> None:
        self.changes_ = changes

    async def changes(self, after: str, block_ms: int) -> AsyncIterator[Change]:
        for change in self.changes_:
            yield change


async def test_every_event_is_aged_by_the_first_record_that_includes_it() -> None:
    run = Run()
    list(stamped([(b"u", b'{"item_text": "x"}')] * 5, run))
    changes = [
        Change("1-0", "u", 1, 2),
        Change("2-0", "u", 2, 2),
        Change("3-0", "u", 3, 5),
        Change("4-0", "u", 4, 4),
    ]
    await record_ages(run, ChangesDouble(changes))  # type: ignore[arg-type]
    assert len(run.refreshed) == 5  # events 1-2 by the first record, 3-5 by the third
    assert run.recorded == {"u": 5}


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
            "triggers": {"novelty": 150, "first_plan": 50},
            "served_from_cache": {"novelty": 40, "first_plan": 10},
            "records_written": 300,
            "records_unchanged": 5,
            "record_conflicts": 1,
            "records_gave_up": 0,
            "dead_lettered": {"malformed_json": 1},
        },
        "freshness_ms_all": {"p50": 4.0, "p95": 8.0, "p99": 9.0, "max": 12.0, "samples": 1000},
        "replan_queue": {"offered": 200, "sent": 20, "superseded": 100, "shed": 0, "pending": 80},
        "plan_cache": {"hits": 60, "misses": 240, "corrupt": 0, "stored": 7},
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
    assert report["replans_decided_per_1000_events"] == 250.0  # 200 requested, 50 served from the cache
    assert report["plan_cache_hit_rate"] == 0.2
    assert report["plan_cache_interest_hit_rate"] == 0.2
    assert report["plan_cache"]["stored"] == 7
    assert report["prompt_tokens_per_replan"] == 1000  # 4,000 over 4 plans; cached ones not counted twice
    assert report["plans"] == {"written": 3, "failed": 1, "judged_bad": 0, "stale": 0, "skipped": 0}
    assert report["generated_tokens_per_replan"] == 100
    assert report["worker_cpu_s_per_1000_events"] == 2.0
    assert report["record_freshness_s"]["events"] == 2
    assert report["record_freshness_s"]["p50"] == pytest.approx(1.0)
    assert report["live_writes_per_s"] == 150.0
    assert report["llm_plans_requested_per_1000_events"] == 200.0
    assert report["llm_prompt_tokens_per_1000_events"] == 200_000  # 200 plans x 1,000 tokens


def test_the_fresh_record_ratio_counts_users_with_described_events() -> None:
    run = Run(done_publishing=1.0)
    list(stamped([(b"a", b'{"query": "q"}'), (b"a", b'{"query": "q"}'), (b"b", b'{"brand": "z"}')], run))
    list(stamped([(b"c", b"{}")], run))  # nothing to name: no record expected
    run.recorded = {"a": 1, "b": 1}
    stats = {
        "counters": {"applied": 4, "first_batch_at": 0.0, "last_batch_at": 1.0, "triggers": {},
                     "served_from_cache": {}, "records_written": 2, "records_unchanged": 0,
                     "record_conflicts": 0, "records_gave_up": 0, "dead_lettered": {}},
        "replan_queue": {},
    }  # fmt: skip
    report = summarise(run, stats, [], sent=4)
    assert (report["users_with_activity"], report["users_with_described_activity"]) == (3, 2)
    assert report["users_with_fresh_record_ratio"] == 0.5  # a's newest event is not in a record


def test_cpu_and_peak_memory_of_a_live_process() -> None:
    cpu, peak_mb = _proc(os.getpid())
    assert cpu > 0
    assert peak_mb > 10


def test_record_ages_are_binned_over_the_run() -> None:
    series = freshness_series([(0.5, 1.0), (1.0, 3.0), (7.0, 0.2)], bin_s=5.0)
    assert series["t"] == [2.5, 7.5]
    assert series["events"] == [2, 1]
    assert series["p50"] == [2.0, 0.2]


def test_before_and_after_in_one_picture(tmp_path: Path) -> None:
    before = {
        "benchmark": "replay", "replans_decided_per_1000_events": 80.0, "prompt_tokens_per_replan": None,
        "record_freshness_s": {"events": 0},
    }  # fmt: skip
    after = {
        "benchmark": "replay", "llm_plans_requested_per_1000_events": 8.0, "prompt_tokens_per_replan": 2000,
        "llm_prompt_tokens_per_1000_events": 16_000, "plan_cache_hit_rate": 0.5,
        "series": {"record_freshness_s": freshness_series([(0.5, 1.0), (6.0, 0.4)])},
    }  # fmt: skip
    result = compare(before, after, tmp_path)
    # The before run made no plan: its tokens are priced at the after run's prompt size, said so.
    assert result["before"]["llm_prompt_tokens_per_1000_events"] == 160_000
    assert result["before"]["prompt_size_from_the_other_run"] is True
    assert result["after"]["llm_prompt_tokens_per_1000_events"] == 16_000
    assert Path(result["plot"]).stat().st_size > 10_000


def test_compare_refuses_what_is_not_a_replay_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from intentstream.cli import main

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"benchmark": "replay"}')
    bad.write_text("{not json")
    assert main(["bench", "compare", "--before", str(bad), "--after", str(good)]) == 2
    assert "cannot read the report" in capsys.readouterr().err
    bad.write_text('{"benchmark": "eval"}')
    assert main(["bench", "compare", "--before", str(bad), "--after", str(good)]) == 2
