"""`bench replay` and `eval` end to end on real parts: a small slice of the REES46 log, the
real broker, redis-server, a worker and the vLLM CPU server."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from intentstream.deploy import stack
from intentstream.perf.bench_replay import bench_replay
from intentstream.perf.evaluation import run_eval
from intentstream.perf.logs import load_events
from intentstream.schemas.codec import encode
from intentstream.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.llm]

REES46 = Settings().datasets_dir / "rees46" / "events.csv"


def test_bench_replay_reports_the_loop_on_a_small_log(llm_server: stack.Service, tmp_path: Path) -> None:
    log = tmp_path / "slice.jsonl"
    events = list(itertools.islice(load_events(REES46, "rees46"), 400))
    log.write_bytes(b"".join(encode(e) + b"\n" for e in events) + b'{"user_id": 7}\n')
    settings = Settings(
        home=tmp_path / "home", llm_base_url=llm_server.address, replan_budget_per_s=0.5,
        replan_first_min_weight=4.5,  # 400 events: first plans at the novelty weight
    )  # fmt: skip
    result = bench_replay(settings, log, "jsonl", drain_s=15.0, plot_dir=tmp_path / "plots")

    assert result["events_published"] == result["events_applied"] == 400
    assert result["rows_skipped"] == {"no_user_id": 1}
    assert result["publish_events_per_s"] > 0
    assert result["sustained_events_per_s"] > 0
    assert result["context_freshness_ms"]["samples"] == 400
    assert result["context_freshness_ms"]["p50"] <= result["context_freshness_ms"]["p99"]
    assert result["replans_decided_per_1000_events"] > 0
    assert result["worker_cpu_s_per_1000_events"] > 0
    assert result["worker_peak_rss_mb"] > 50
    series = result["series"]
    assert len(series["t"]) == len(series["applied"]) >= 3
    assert series["applied"][-1] == 400
    for plot in result["plots"]:
        assert Path(plot).stat().st_size > 10_000
    assert result["record_freshness_s"]["events"] >= 1  # live records, whatever the LLM does
    assert result["users_with_fresh_record_ratio"] == 1.0
    if result["plans"]["written"]:  # the LLM on two cores may write none in 15 s
        assert result["prompt_tokens_per_replan"] > 0


def test_eval_scores_every_mode_on_the_real_model(llm_server: stack.Service, tmp_path: Path) -> None:
    # Two users: their first plans at the novelty weight, so the agents' tags are scored.
    settings = Settings(home=tmp_path / "home", llm_base_url=llm_server.address, replan_first_min_weight=4.5)
    result = run_eval(settings, REES46, "rees46", k=30, users=2, seed=1, plot_dir=tmp_path)

    assert result["users_evaluated"] == 2
    assert result["sample"] == {"users": 2, "seed": 1}
    assert set(result["hr_at_k_by_delay"]) == {"every_event", "realtime", "5min", "30min", "1h", "daily"}
    assert set(result["two_speeds"]["alone"]) == {
        "record",
        "llm_tags",
        "live_entries",
        "record_with_cache",
        "llm_tags_with_cache",
    }
    for key in ("hr_at_k_realtime", "hr_at_k_daily", "hr_at_k_popular", "hr_at_k_last_category"):
        assert 0.0 <= result[key] <= 1.0
    assert result["users_with_tags_by_delay"]["realtime"] >= 1  # the agents tagged a real user
    assert result["plans"] >= 2
    assert Path(result["plot"]).stat().st_size > 10_000
