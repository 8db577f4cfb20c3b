"""The re-plan rule: strong events, every N events, a cooldown, nothing to ground on."""

from __future__ import annotations

from typing import Any

from schemas.events import BehaviorEvent
from stream.context import UserContext, apply_event
from stream.trigger import TriggerPolicy, mark_replanned
from tests.helpers import event_dict

POLICY = TriggerPolicy(every_n_events=3, cooldown_s=10.0)


def feed(ctx: UserContext, n: int, **fields: Any) -> BehaviorEvent:
    e = BehaviorEvent.model_validate(event_dict(n, **fields))
    apply_event(ctx, e, recent_limit=20, seen_limit=100)
    return e


def test_views_replan_every_n_events() -> None:
    ctx = UserContext("u1")
    decisions = [POLICY.decide(ctx, feed(ctx, n), now_s=1000.0) for n in range(3)]
    assert decisions == [None, None, "every_n_events"]


def test_strong_events_replan_at_once() -> None:
    for action in ("cart", "purchase", "search"):
        ctx = UserContext("u1")
        assert POLICY.decide(ctx, feed(ctx, 1, action=action), now_s=1000.0) == f"strong_event:{action}"


def test_cooldown_holds_back_replans_then_lets_them_through() -> None:
    ctx = UserContext("u1")
    mark_replanned(ctx, 1000.0)
    assert POLICY.decide(ctx, feed(ctx, 1, action="cart"), now_s=1005.0) is None
    assert POLICY.decide(ctx, feed(ctx, 2, action="cart"), now_s=1011.0) == "strong_event:cart"


def test_events_counted_during_cooldown_still_trigger_later() -> None:
    ctx = UserContext("u1")
    mark_replanned(ctx, 1000.0)
    for n in range(5):
        assert POLICY.decide(ctx, feed(ctx, n), now_s=1001.0) is None
    assert POLICY.decide(ctx, feed(ctx, 9), now_s=1020.0) == "every_n_events"


def test_no_replan_without_any_described_item() -> None:
    ctx = UserContext("u1")
    e = feed(ctx, 1, action="cart", item_text=None, category=None, brand=None)
    assert POLICY.decide(ctx, e, now_s=1000.0) is None


def test_mark_replanned_resets_the_counter() -> None:
    ctx = UserContext("u1")
    feed(ctx, 1)
    mark_replanned(ctx, 50.0)
    assert ctx.events_since_plan == 0
    assert ctx.last_replan_at == 50.0
