"""The re-plan rule (a pure function) and the queue that holds re-plans to the budget."""

from __future__ import annotations

from typing import Any

from intentstream.kernels.scorer import Scorer
from intentstream.schemas.events import BehaviorEvent, EnvSignal, SignalKind
from intentstream.schemas.record import Trigger
from intentstream.stream.context import ContextShape, UserContext, apply_event, drifts, event_entity
from intentstream.stream.entities import DIMS, EntityCache
from intentstream.stream.trigger import (
    STRONG,
    STRONG_ACTIONS,
    Decision,
    ReplanQueue,
    TriggerPolicy,
    mark_replanned,
)
from tests.helpers import event_dict, signal_dict

POLICY = TriggerPolicy(every_n_events=3, cooldown_s=10.0, drift_threshold=0.35, stale_after_s=600.0)
ENTITIES = EntityCache()
SCORER = Scorer(DIMS, backend="torch")


def feed(ctx: UserContext, n: int, **fields: Any) -> BehaviorEvent:
    """Apply an event and grow the user's sequence in the entity pool, as the worker does."""
    e = BehaviorEvent.model_validate(event_dict(n, **fields))
    if apply_event(ctx, e, ContextShape(), ENTITIES) and (vector := event_entity(e, ENTITIES)) is not None:
        SCORER.add([ctx.user_id], vector[None])
    return e


def measured(ctx: UserContext) -> float:
    return drifts([ctx], SCORER)[0]


def reason(decision: Decision | None) -> str | None:
    return None if decision is None else decision.reason


def test_views_replan_every_n_events() -> None:
    ctx = UserContext("u1")
    decisions = [reason(POLICY.decide(ctx, 1000.0, event=feed(ctx, n))) for n in range(3)]
    assert decisions == [None, None, "every_n_events"]


def test_strong_events_replan_at_once_with_top_priority() -> None:
    for action in ("cart", "purchase", "search"):
        ctx = UserContext("u1")
        decision = POLICY.decide(ctx, 1000.0, event=feed(ctx, 1, action=action))
        assert decision == Decision(Trigger(f"strong_event:{action}"), STRONG)


def test_cooldown_holds_back_replans_then_lets_them_through() -> None:
    ctx = UserContext("u1")
    mark_replanned(ctx, 1000.0)
    assert POLICY.decide(ctx, 1005.0, event=feed(ctx, 1, action="cart")) is None
    assert reason(POLICY.decide(ctx, 1011.0, event=feed(ctx, 2, action="cart"))) == "strong_event:cart"


def test_events_counted_during_cooldown_still_trigger_later() -> None:
    ctx = UserContext("u1")
    mark_replanned(ctx, 1000.0)
    for n in range(5):
        assert POLICY.decide(ctx, 1001.0, event=feed(ctx, n)) is None
    assert reason(POLICY.decide(ctx, 1020.0)) in ("drift", "every_n_events")


def test_drift_replans_before_every_n_when_interests_move() -> None:
    ctx = UserContext("drifter")
    for n in (-7200, -7199, -7198):  # phones two hours (two half-lives) earlier
        feed(ctx, n, price=100.0)
    mark_replanned(ctx, 1000.0)
    feed(ctx, 10, item_text="bosch kettle", category="appliances.kitchen.kettle", brand="bosch", item_id="k")
    kettle = feed(
        ctx, 11, item_text="bosch kettle", category="appliances.kitchen.kettle", brand="bosch", item_id="k"
    )
    assert not POLICY.urgent(kettle)
    assert POLICY.wants_drift(ctx, 1020.0)
    assert measured(ctx) >= POLICY.drift_threshold
    assert reason(POLICY.decide(ctx, 1020.0, event=kettle, drift=measured(ctx))) == "drift"
    assert POLICY.decide(ctx, 1020.0, event=kettle) is None  # not measured: no drift test


def test_same_interest_does_not_drift() -> None:
    ctx = UserContext("steady")
    for n in range(3):
        feed(ctx, n)
    mark_replanned(ctx, 1000.0)
    feed(ctx, 4)
    event = feed(ctx, 5)
    assert POLICY.wants_drift(ctx, 1020.0)
    assert POLICY.decide(ctx, 1020.0, event=event, drift=measured(ctx)) is None


def test_drift_is_measured_only_for_users_who_could_replan() -> None:
    ctx = UserContext("u1")
    feed(ctx, 1)
    assert not POLICY.wants_drift(ctx, 1000.0)  # never planned: nothing to drift from
    mark_replanned(ctx, 1000.0)
    feed(ctx, 2)
    assert not POLICY.wants_drift(ctx, 1020.0)  # one event since the plan
    feed(ctx, 3)
    assert not POLICY.wants_drift(ctx, 1005.0)  # cooling down
    assert POLICY.wants_drift(ctx, 1020.0)
    assert POLICY.urgent(BehaviorEvent.model_validate(event_dict(4, action="cart")))


def test_stale_plan_with_new_events_is_refreshed() -> None:
    ctx = UserContext("u1")
    feed(ctx, 1)
    mark_replanned(ctx, 1000.0)
    assert POLICY.decide(ctx, 1500.0) is None  # nothing new yet
    feed(ctx, 1)  # a duplicate changes nothing
    feed(ctx, 2)
    assert POLICY.decide(ctx, 1500.0) is None  # not stale yet
    assert reason(POLICY.decide(ctx, 1601.0)) == "stale"


def test_a_new_signal_replans_its_users_once() -> None:
    ctx = UserContext("u1", region="Lyon")
    feed(ctx, 1)
    rain = EnvSignal.model_validate(signal_dict(1))
    decision = POLICY.decide(ctx, 1000.0, signal=rain)
    assert reason(decision) == "signal:weather"
    mark_replanned(ctx, 1000.0, rain)
    assert POLICY.decide(ctx, 2000.0, signal=rain) is None


def test_no_replan_without_any_described_item() -> None:
    ctx = UserContext("u1")
    e = feed(ctx, 1, action="cart", item_text=None, category=None, brand=None)
    assert POLICY.decide(ctx, 1000.0, event=e) is None


def test_mark_replanned_resets_the_counter_and_remembers_the_interest() -> None:
    ctx = UserContext("u1")
    feed(ctx, 1)
    mark_replanned(ctx, 50.0)
    assert ctx.events_since_plan == 0
    assert ctx.last_replan_at == 50.0
    assert (ctx.plan_interest == ctx.interest).all()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_queue_keeps_only_the_newest_request_per_user() -> None:
    queue: ReplanQueue[str] = ReplanQueue(rate_per_s=100, burst=100, capacity=10, clock=Clock())
    queue.offer("u1", 3, "u1 v1")
    queue.offer("u1", 3, "u1 v2")
    queue.offer("u2", 3, "u2 v1")
    assert queue.take() == ["u1 v2", "u2 v1"]
    assert queue.counters.superseded == 1
    assert queue.take() == []


def test_queue_serves_the_most_urgent_first_within_the_budget() -> None:
    clock = Clock()
    queue: ReplanQueue[str] = ReplanQueue(rate_per_s=2, burst=2, capacity=100, clock=clock)
    for i in range(5):
        queue.offer(f"viewer{i}", 3, f"viewer{i}")
    queue.offer("buyer", 0, "buyer")
    assert queue.take() == ["buyer", "viewer0"]  # the burst
    assert queue.take() == []  # no budget left at this instant
    clock.now = 1.0
    assert queue.take() == ["viewer1", "viewer2"]  # two per second
    assert queue.counters.sent == 4
    assert len(queue) == 2


def test_queue_sheds_the_least_urgent_oldest_when_full_and_counts_it() -> None:
    queue: ReplanQueue[str] = ReplanQueue(rate_per_s=1000, burst=1000, capacity=3, clock=Clock())
    queue.offer("a", 4, "a")
    queue.offer("b", 4, "b")
    queue.offer("c", 0, "c")
    queue.offer("d", 1, "d")  # full: "a" (stale, oldest) goes
    assert queue.counters.shed == 1
    assert queue.take() == ["c", "d", "b"]


def test_a_storm_of_signals_is_held_to_the_budget() -> None:
    clock = Clock()
    queue: ReplanQueue[int] = ReplanQueue(rate_per_s=5, burst=5, capacity=1000, clock=clock)
    for user in range(10_000):
        queue.offer(f"u{user}", 1, user)
    sent = []
    for second in range(10):
        clock.now = float(second)
        sent += queue.take()
    assert len(sent) <= 5 + 5 * 9
    assert queue.counters.shed == 10_000 - 1000


def test_every_trigger_the_policy_can_decide_is_a_trigger_value() -> None:
    assert {Trigger.strong(a) for a in STRONG_ACTIONS} <= set(Trigger)
    assert {Trigger.signal(k) for k in SignalKind} <= set(Trigger)
