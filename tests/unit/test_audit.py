"""The fact audit against raw events: the plans the demo once printed as "good" are caught,
true ones pass, and coverage counts the interests with real weight."""

from __future__ import annotations

from datetime import timedelta

from intentstream.agents.audit import LogItems, audit_plan, audit_tag, entity_words, interests, kinds
from intentstream.schemas.events import Action, BehaviorEvent
from tests.helpers import NOW

_N = iter(range(10**6))


def seen(
    brand: str, kind: str, times: int = 1, action: Action = Action.VIEW, price: float | None = None
) -> list[BehaviorEvent]:
    category = {"smartphone": "electronics.smartphone", "vacuum": "appliances.environment.vacuum"}.get(
        kind, f"appliances.kitchen.{kind}"
    )
    return [
        BehaviorEvent(
            event_id=f"e{next(_N)}", user_id="u1", action=action, ts=NOW - timedelta(minutes=times - n),
            item_id=f"{brand}-{kind}", item_text=f"{brand} {kind}", category=category, brand=brand,
            price=price,
        )
        for n in range(times)
    ]  # fmt: skip


APPLE = seen("apple", "smartphone", 7, price=900.0)
APPLE_THEN_SAMSUNG = APPLE + seen("samsung", "smartphone", 4, price=300.0)


def test_wrong_brand_in_an_explanation_is_false() -> None:
    plan = audit_plan(
        [("apple smartphone", "You viewed the Samsung smartphone 4 times.")], APPLE_THEN_SAMSUNG, max_tags=3
    )
    assert plan.tags[0].grounded
    assert not plan.tags[0].factual
    assert any("samsung" in p for p in plan.tags[0].problems)


def test_wrong_count_is_false_and_the_true_one_passes() -> None:
    user = interests(APPLE_THEN_SAMSUNG)
    assert not audit_tag("samsung smartphone", "You viewed the Samsung smartphone 2 times.", user).factual
    good = audit_tag("samsung smartphone", "You viewed the Samsung smartphone 4 times.", user)
    assert good.factual
    assert good.grounded
    assert not good.problems


def test_a_tag_with_a_word_in_no_interest_is_not_grounded() -> None:
    events = seen("redmond", "kettle", 7) + seen("moulinex", "toaster", 1, price=77.2)
    plan = audit_plan([("moulinex watch", "You viewed the Moulinex watch 77.2.")], events, max_tags=3)
    assert not plan.tags[0].grounded
    assert not plan.heaviest_covered  # redmond, the heaviest, is missing
    assert plan.heaviest == "redmond kettle"


def test_a_word_of_the_users_own_interests_must_still_be_in_one_interest() -> None:
    events = seen("samsung", "smartphone", 2) + seen("bosch", "kettle", 2)
    assert not audit_plan([("samsung kettle", "You viewed it.")], events, max_tags=3).tags[0].grounded


def test_a_broader_tag_covers_every_interest_it_names() -> None:
    plan = audit_plan([("smartphone deals", "x")], APPLE_THEN_SAMSUNG, max_tags=3)
    assert not plan.tags[0].grounded  # "deals" is in no interest
    plan = audit_plan([("smartphones", "You viewed smartphones 11 times.")], APPLE_THEN_SAMSUNG, max_tags=3)
    assert plan.tags[0].grounded
    assert plan.tags[0].factual
    assert plan.heaviest_covered
    assert plan.coverage == 1.0


def test_a_price_band_of_the_tags_items_is_true_another_price_is_not() -> None:
    events = seen("dauscher", "vacuum", 1, price=33.0) + seen("gorenje", "vacuum", 4, price=90.0)
    user = interests(events)
    assert audit_tag("vacuums", "You viewed vacuums costing 33-90.", user).factual
    assert not audit_tag("vacuums", "You viewed vacuums costing 33-95.", user).factual


def test_a_claimed_purchase_needs_one() -> None:
    user = interests(seen("bosch", "kettle", 2))
    assert not audit_tag("bosch kettle", "You bought the Bosch kettle.", user).factual
    assert audit_tag("bosch kettle", "You viewed the Bosch kettle twice.", user).factual


def test_a_known_brand_outside_the_users_data_is_false() -> None:
    log = seen("apple", "smartphone") + seen("xiaomi", "smartphone")
    user = interests(seen("apple", "smartphone", 2))
    text = "You viewed the Xiaomi smartphone twice."
    assert audit_tag("apple smartphone", text, user).factual  # without the log's entities: unknown word
    assert not audit_tag("apple smartphone", text, user, entity_words(log)).factual


def test_the_moment_may_be_named() -> None:
    user = interests(seen("bosch", "kettle", 2))
    known = entity_words(seen("winter", "kettle"))
    text = "You viewed the Bosch kettle twice, just right for winter."
    assert not audit_tag("bosch kettle", text, user, known).factual
    assert audit_tag("bosch kettle", text, user, known, moment="winter").factual


def test_coverage_counts_interests_with_real_weight_up_to_the_tag_limit() -> None:
    events = (
        seen("gorenje", "vacuum", 4)
        + seen("beko", "dishwasher", 2)
        + seen("bosch", "vacuum", 1)
        + seen("dauscher", "vacuum", 1)
    )
    plan = audit_plan([("gorenje vacuum", "You viewed the Gorenje vacuum 4 times.")], events, max_tags=3)
    assert plan.heaviest_covered
    assert plan.with_weight == 2  # the vacuums (gorenje, bosch, dauscher), then the dishwasher
    assert plan.covered_with_weight == 1
    assert plan.passed


def test_an_interest_is_a_kind_of_item_not_one_description() -> None:
    # Three vacuums viewed once each outweigh a dishwasher viewed twice: the vacuums are
    # the heaviest interest, and a tag for any of them covers it.
    events = (
        seen("beko", "dishwasher", 2)
        + seen("bosch", "vacuum")
        + seen("gorenje", "vacuum")
        + seen("dauscher", "vacuum")
    )
    plan = audit_plan([("bosch vacuum", "You viewed the Bosch vacuum.")], events, max_tags=3)
    assert plan.heaviest_covered
    assert not plan.heaviest_item_covered  # the single heaviest description is the dishwasher
    assert not audit_plan([("beko dishwasher", "You viewed it twice.")], events, max_tags=3).heaviest_covered


def _bought(text: str, times: int) -> list[BehaviorEvent]:
    return [
        BehaviorEvent(
            event_id=f"e{next(_N)}", user_id="u1", action=Action.PURCHASE, ts=NOW - timedelta(minutes=n),
            item_id=text, item_text=text,
        )
        for n in range(times)
    ]  # fmt: skip


def test_without_categories_descriptions_sharing_two_words_are_one_kind() -> None:
    events = (
        _bought("WHITE SKULL HOT WATER BOTTLE", 2)
        + _bought("GREY HEART HOT WATER BOTTLE", 2)
        + _bought("RED ENCHANTED FOREST PLACEMAT", 3)
        + _bought("SET OF 72 RETROSPOT PAPER DOILIES", 1)
        + _bought("PACK OF 72 RED APPLE CAKE CASES", 1)  # shares only "72", a number: not a kind
    )
    grouped = kinds(interests(events))
    assert [len(k.members) for k in grouped] == [2, 1, 1, 1]
    assert grouped[0].weight > grouped[1].weight
    plan = audit_plan([("hot water bottle", "You bought hot water bottles.")], events, max_tags=3)
    assert plan.heaviest_covered
    assert not plan.heaviest_item_covered  # the placemat, bought three times
    assert not audit_plan([("placemat", "You bought it.")], events, max_tags=3).heaviest_covered


def test_a_tag_only_one_item_of_the_log_holds_is_that_items_name() -> None:
    events = (
        _bought("WHITE SKULL HOT WATER BOTTLE", 2)
        + _bought("GREY HEART HOT WATER BOTTLE", 1)
        + seen("apple", "smartphone", 2)
        + [e.model_copy(update={"item_id": "apple-2"}) for e in seen("apple", "smartphone")]
    )
    log = LogItems(events)
    assert log.satisfying("hot water bottle") == 2  # an interest
    assert log.satisfying("white skull hot water bottle") == 1  # one item's name
    assert log.satisfying("apple smartphones") == 2  # two items share a typed description
    assert log.satisfying("pink flamingo") == 0
    assert log.satisfying("") == 0
    plan = audit_plan(
        [("white skull hot water bottle", "You bought it."), ("hot water bottle", "You bought them.")],
        events,
        max_tags=3,
        log_items=log,
    )
    assert [t.items_satisfying for t in plan.tags] == [1, 2]
    assert audit_plan([("hot water bottle", "x")], events, max_tags=3).tags[0].items_satisfying is None


def test_no_events_and_no_tags_audit_cleanly() -> None:
    plan = audit_plan([], [], max_tags=3)
    assert plan.heaviest is None
    assert not plan.heaviest_covered
    assert plan.coverage == 1.0
    assert not audit_plan([("apple smartphone", "You viewed it.")], [], max_tags=3).tags[0].grounded


def test_a_two_letter_brand_counts() -> None:
    events = seen("lg", "refrigerator", 2) + seen("haier", "refrigerator", 1)
    plan = audit_plan([("lg refrigerator", "You viewed the haier refrigerator.")], events, max_tags=3)
    assert plan.tags[0].grounded
    assert not plan.tags[0].factual  # the Haier one explains the LG tag
