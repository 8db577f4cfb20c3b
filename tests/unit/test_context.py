"""The per-user context: bounded, idempotent by event id, time-ordered."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from schemas.events import BehaviorEvent, EnvSignal
from stream.context import UserContext, apply_event, replan_request, signals_for
from tests.helpers import NOW, event_dict, signal_dict


def event(n: int, **fields: Any) -> BehaviorEvent:
    return BehaviorEvent.model_validate(event_dict(n, **fields))


def apply(ctx: UserContext, e: BehaviorEvent, recent: int = 20, seen: int = 100) -> bool:
    return apply_event(ctx, e, recent_limit=recent, seen_limit=seen)


def test_event_updates_counts_version_and_recent() -> None:
    ctx = UserContext("u1")
    assert apply(ctx, event(1))
    assert apply(ctx, event(2, action="cart"))
    assert ctx.version == 2
    assert ctx.counts == {"view": 1, "cart": 1}
    assert [b["action"] for b in ctx.recent] == ["view", "cart"]
    assert ctx.newest_event_ts == event(2).ts.timestamp()


def test_redelivered_event_is_not_counted_twice() -> None:
    ctx = UserContext("u1")
    assert apply(ctx, event(1))
    before = ctx.to_bytes()
    assert not apply(ctx, event(1))
    assert ctx.to_bytes() == before


def test_context_stays_bounded_over_a_long_history() -> None:
    ctx = UserContext("u1")
    for n in range(5000):
        apply(ctx, event(n), recent=20, seen=64)
    assert len(ctx.recent) == 20
    assert len(ctx.seen) == 64
    assert ctx.version == 5000
    assert len(ctx.to_bytes()) < 8 * 1024


def test_out_of_order_events_are_kept_in_time_order() -> None:
    ctx = UserContext("u1")
    apply(ctx, event(5))
    apply(ctx, event(2))
    assert [b["ts"] for b in ctx.recent] == sorted(b["ts"] for b in ctx.recent)
    assert ctx.newest_event_ts == event(5).ts.timestamp()


def test_region_is_learned_from_events() -> None:
    ctx = UserContext("u1")
    apply(ctx, event(1, region="Lyon"))
    apply(ctx, event(2))
    assert ctx.region == "Lyon"


def test_bytes_round_trip() -> None:
    ctx = UserContext("u1")
    apply(ctx, event(1, region="Lyon"))
    assert UserContext.from_bytes(ctx.to_bytes()) == ctx


def test_signals_reach_only_their_region_and_expire() -> None:
    ctx = UserContext("u1", region="Lyon")
    here = EnvSignal.model_validate(signal_dict(1, region="Lyon"))
    everyone = EnvSignal.model_validate(signal_dict(2, region="*", kind="holiday", text="national holiday"))
    elsewhere = EnvSignal.model_validate(signal_dict(3, region="Oslo"))
    active = signals_for(ctx, [here, everyone, elsewhere], NOW)
    assert {s.text for s in active} == {"heavy rain all weekend", "national holiday"}
    assert signals_for(ctx, [here], NOW + timedelta(days=5)) == []


def test_replan_request_snapshots_the_context() -> None:
    ctx = UserContext("u1")
    for n in range(3):
        apply(ctx, event(n))
    request = replan_request(ctx, trigger="every_n_events", signals=[], now=NOW)
    assert request.context_version == 3
    assert len(request.recent) == 3
    assert request.newest_event_time == event(2).ts
