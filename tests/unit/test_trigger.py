"""The re-plan rule (a pure function) and the queue that holds re-plans to the budget."""

from __future__ import annotations

from typing import Any

from intentstream.schemas.events import BehaviorEvent, EnvSignal, SignalKind
from intentstream.schemas.record import Trigger
from intentstream.stream.context import ContextShape, UserContext, apply_event
from intentstream.stream.entities import EntityCache
from intentstream.stream.live import novel
from intentstream.stream.trigger import (
    FIRST_PLAN,
    NOVELTY,
    STRONG_NOVELTY,
    Decision,
    ReplanQueue,
    TriggerPolicy,
    mark_replanned,
)
from tests.helpers import event_dict, signal_dict

POLICY = TriggerPolicy(cooldown_s=10.0, min_weight=2.5, first_min_weight=2.5, stale_after_s=600.0)
SHAPE = ContextShape()
ENTITIES = EntityCache()
KETTLE = {"item_text": "bosch kettle", "category": "appliances.kitchen.kettle", "brand": "bosch"} | {
    "item_id": "k"
}


def feed(ctx: UserContext, n: int, **fields: Any) -> BehaviorEvent:
    e = BehaviorEvent.model_validate(event_dict(n, **fields))
    apply_event(ctx, e, SHAPE, ENTITIES)
    return e


def decide(ctx: UserContext, now_s: float, signal: EnvSignal | None = None) -> Decision | None:
    """As the worker's batch path decides: from what is new in the context."""
    return POLICY.decide(
        ctx, now_s, signal=signal, new=novel(ctx, SHAPE, ENTITIES, POLICY.weight_to_ask(ctx))
    )


def planned_on_phones() -> UserContext:
    """A user who viewed phones three times and was re-planned at 1000 s."""
    ctx = UserContext("u1")
    for n in range(3):
        feed(ctx, n)
    mark_replanned(ctx, 1000.0, SHAPE)
    return ctx


def reason(decision: Decision | None) -> str | None:
    return None if decision is None else decision.reason


def test_a_first_plan_waits_for_more_weight_than_a_later_novelty() -> None:
    policy = TriggerPolicy(min_weight=2.5, first_min_weight=6.0)
    ctx = UserContext("u1")
    for n in range(4):
        feed(ctx, n)
    assert policy.weight_to_ask(ctx) == 6.0
    four_views = novel(ctx, SHAPE, ENTITIES, policy.weight_to_ask(ctx))
    assert four_views is None  # the live record says it all
    for n in range(4, 7):
        feed(ctx, n)
    new = novel(ctx, SHAPE, ENTITIES, policy.weight_to_ask(ctx))
    assert reason(policy.decide(ctx, 1000.0, new=new)) == "first_plan"
    mark_replanned(ctx, 1000.0, SHAPE)
    assert policy.weight_to_ask(ctx) == 2.5  # once planned, a new interest needs less
    assert TriggerPolicy(min_weight=5.0, first_min_weight=1.0).weight_to_ask(UserContext("u2")) == 5.0


def test_a_first_interest_with_real_weight_asks_for_the_first_plan() -> None:
    ctx = UserContext("u1")
    feed(ctx, 1)
    feed(ctx, 2)
    assert decide(ctx, 1000.0) is None  # two views weigh 2: not yet worth the LLM
    feed(ctx, 3)
    assert decide(ctx, 1000.0) == Decision(Trigger.FIRST_PLAN, FIRST_PLAN)


def test_more_of_what_was_asked_about_never_asks_again() -> None:
    ctx = planned_on_phones()
    for n in range(3, 40):
        feed(ctx, n, action="cart" if n % 5 == 0 else "view")
        assert decide(ctx, 1020.0 + n) is None  # no "every N events": the live record follows


def test_a_new_interest_with_real_weight_asks_again() -> None:
    ctx = planned_on_phones()
    feed(ctx, 10, **KETTLE)
    assert decide(ctx, 1020.0) is None  # one kettle view is not yet an interest
    feed(ctx, 11, **KETTLE)
    feed(ctx, 12, **KETTLE)
    assert decide(ctx, 1020.0) == Decision(Trigger.NOVELTY, NOVELTY)


def test_a_new_interest_put_in_the_cart_is_the_most_urgent() -> None:
    ctx = planned_on_phones()
    feed(ctx, 10, action="cart", **KETTLE)
    assert decide(ctx, 1020.0) == Decision(Trigger.NOVELTY, STRONG_NOVELTY)


def test_coverage_is_decided_from_embeddings_not_exact_words() -> None:
    ctx = UserContext("u1")
    for n in range(3):
        feed(ctx, n, item_text="samsung galaxy a51 phone", item_id="a51")
    mark_replanned(ctx, 1000.0, SHAPE)
    for n in range(3, 6):  # a near twin: covered by what was asked
        feed(ctx, n, item_text="samsung galaxy a52 phone", item_id="a52")
    assert decide(ctx, 1020.0) is None
    for n in range(6, 9):  # shares a word, not the interest
        feed(ctx, n, item_text="samsung television", category="electronics.video.tv", item_id="tv")
    assert reason(decide(ctx, 1020.0)) == "novelty"


def test_cooldown_holds_back_novelty_then_lets_it_through() -> None:
    ctx = planned_on_phones()
    feed(ctx, 10, action="cart", **KETTLE)
    assert decide(ctx, 1005.0) is None
    assert reason(decide(ctx, 1011.0)) == "novelty"


def test_stale_plan_with_new_events_is_refreshed() -> None:
    ctx = UserContext("u1")
    feed(ctx, 1)
    mark_replanned(ctx, 1000.0, SHAPE)
    assert decide(ctx, 1700.0) is None  # nothing new since
    feed(ctx, 1)  # a duplicate changes nothing
    feed(ctx, 2)
    assert decide(ctx, 1500.0) is None  # not stale yet
    assert reason(decide(ctx, 1601.0)) == "stale"


def test_a_new_signal_replans_its_users_once() -> None:
    ctx = UserContext("u1", region="Lyon")
    feed(ctx, 1)
    rain = EnvSignal.model_validate(signal_dict(1))
    assert reason(decide(ctx, 1000.0, signal=rain)) == "signal:weather"
    mark_replanned(ctx, 1000.0, SHAPE, rain)
    assert decide(ctx, 2000.0, signal=rain) is None


def test_no_replan_without_any_described_item() -> None:
    ctx = UserContext("u1", region="Lyon")
    for n in range(5):
        feed(ctx, n, action="cart", item_text=None, category=None, brand=None)
    assert decide(ctx, 1000.0) is None
    assert decide(ctx, 1000.0, signal=EnvSignal.model_validate(signal_dict(1))) is None


def test_mark_replanned_resets_the_counter_and_remembers_what_was_asked() -> None:
    ctx = UserContext("u1")
    feed(ctx, 1)
    feed(ctx, 2, **KETTLE)
    mark_replanned(ctx, 50.0, SHAPE)
    assert ctx.events_since_plan == 0
    assert ctx.last_replan_at == 50.0
    assert set(ctx.planned) == {"bosch kettle", "samsung electronics smartphone model 1"}


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
    assert queue.counters.shed_by_priority == {"stale": 1}
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
    assert {Trigger.signal(k) for k in SignalKind} <= set(Trigger)
