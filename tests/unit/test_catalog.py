"""The item catalog (``stream.catalog``): sightings from events, the index, popularity decayed
in event time, the items a tag gets, the items taken one after another, and what a record
carries of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from intentstream.schemas.events import BehaviorEvent
from intentstream.schemas.record import IntentRecord, IntentTag, feed_items, interleave
from intentstream.stream.catalog import (
    Catalog,
    Sighting,
    co_view_pairs,
    description,
    increment,
    latest_category,
    pair,
    recent_items,
    sightings,
)

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
DAY = 86_400.0


def seen(item: str, text: str, *, category: str | None = None, brand: str | None = None, at: float = 0.0,
         weight: float = 1.0) -> Sighting:  # fmt: skip
    return Sighting(item, text, category, brand, T0.timestamp() + at, weight)


def event(
    n: int, item: str | None, text: str | None, action: str = "view", minutes: int = 0
) -> BehaviorEvent:
    at = T0 + timedelta(minutes=minutes)
    if action == "search":
        return BehaviorEvent(event_id=f"e{n}", user_id="u", action=action, ts=at, query=text)
    return BehaviorEvent(event_id=f"e{n}", user_id="u", action=action, ts=at, item_id=item, item_text=text)


def test_a_batch_sees_each_described_item_once_with_its_attention_summed() -> None:
    found = sightings(
        [
            event(1, "k1", "bosch kettle"),
            event(2, "k1", "bosch kettle", "cart", minutes=5),
            event(3, "x9", None),
            event(4, None, "a query", action="search"),
        ]
    )
    assert [(s.item_id, s.weight, s.ts) for s in found] == [
        ("k1", 4.0, (T0 + timedelta(minutes=5)).timestamp())
    ]


def test_the_items_that_fit_a_tag_come_first_and_the_popular_among_them() -> None:
    catalog = Catalog()
    added = catalog.add(
        [
            seen("k1", "bosch electric kettle", category="appliances.kitchen.kettle", weight=1.0),
            seen("k2", "tefal electric kettle", category="appliances.kitchen.kettle", weight=40.0),
            seen("s1", "samsung galaxy smartphone", category="electronics.smartphone", weight=100.0),
            seen("t1", "lego city fire truck", category="kids.toys", weight=100.0),
        ]
    )
    assert added == 4
    assert catalog.add([seen("k1", "bosch electric kettle", weight=1.0)]) == 0  # known: popularity only
    [kettles, phones, nothing] = catalog.candidates(
        ["electric kettle", "smartphone", "zzz qqq"], T0.timestamp()
    )
    assert kettles[:2] == ["k2", "k1"]  # both fit; the popular one first
    assert phones[0] == "s1"
    assert "t1" not in kettles
    assert nothing == []  # shares nothing with any item
    assert catalog.candidates(["electric kettle"], T0.timestamp(), exclude=["k2"])[0][0] == "k1"
    assert catalog.candidates([], T0.timestamp()) == []
    assert Catalog().candidates(["kettle"], T0.timestamp()) == [[]]


def test_a_tag_that_names_a_brand_shows_that_brands_items_not_a_more_popular_brands() -> None:
    catalog = Catalog()
    catalog.add(
        [
            seen("a1", "apple smartphone", category="electronics.smartphone", weight=500.0),
            seen("h1", "huawei smartphone", category="electronics.smartphone", weight=2.0),
            seen("h2", "huawei smartphone", category="electronics.smartphone", weight=1.0),
        ]
    )
    [huawei, phones] = catalog.candidates(["huawei smartphone", "smartphone"], T0.timestamp())
    assert huawei == ["h1", "h2"]  # "apple smartphone" shares one word of two: it does not fit
    assert phones[0] == "a1"  # the kind alone: every brand fits, the popular first


def test_popularity_halves_every_half_life_of_event_time() -> None:
    catalog = Catalog(half_life_s=DAY)
    catalog.add([seen("old", "teapot", weight=8.0), seen("new", "teacup", at=3 * DAY, weight=2.0)])
    pop = catalog.popularity([0, 1], T0.timestamp() + 3 * DAY)
    assert pop[0] == pytest.approx(1.0)  # 8 halved three times
    assert pop[1] == pytest.approx(2.0)
    assert catalog.popular(T0.timestamp() + 3 * DAY, 2) == ["new", "old"]
    assert catalog.popular(T0.timestamp() + 3 * DAY, 2, exclude=["new"]) == ["old"]
    catalog.add([seen("old", "teapot", at=3 * DAY, weight=1.0)])  # seen again: decayed, then added
    assert catalog.popularity([0], T0.timestamp() + 3 * DAY)[0] == pytest.approx(2.0)


def test_a_catalog_grows_past_its_first_arrays() -> None:
    catalog = Catalog()
    catalog.add(seen(f"i{n}", f"item number {n}", weight=float(n)) for n in range(3000))
    assert len(catalog) == 3000
    assert catalog.popular(T0.timestamp(), 1) == ["i2999"]


@pytest.mark.parametrize(
    "row",
    [
        {},
        [],
        ["x", 1.0],  # no weight
        ["x", float("nan"), 1.0],
        ["x", 1.0, -3.0],
        ["x", "soon", 1.0],
        ["x", True, 1.0],
        ["", 1.0, 1.0],
        ["k" * 129, 1.0, 1.0],
        [7, 1.0, 1.0],
    ],
)
def test_a_feed_row_that_is_not_a_popularity_count_is_refused(row: object) -> None:
    with pytest.raises(ValueError, match=r"row|item id|event time"):
        increment(row)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"{oops",
        b'{"text": "kettle"}',
        b'["kettle", "home"]',
        b'["kettle", "home", null]',  # no price
        b"[7, null, null, null]",
        b'["kettle", 3, null, null]',
        b'["kettle", null, null, -4]',
        b'["kettle", null, null, "cheap"]',
        b'["kettle", null, null, true]',
    ],
)
def test_a_description_that_is_not_one_is_refused(raw: bytes | None) -> None:
    with pytest.raises(ValueError, match="description"):
        description(raw)


def test_a_description_is_read_back_and_oversized_parts_are_cut() -> None:
    assert increment(["k1", 5, 2.5]) == ("k1", 5.0, 2.5)
    assert description(b'["bosch kettle", "home.kettle", null, 39.5]') == (
        "bosch kettle", "home.kettle", None, 39.5
    )  # fmt: skip
    text, category, brand, price = description(orjson.dumps(["t" * 5000, "c" * 900, "b" * 300, None]))
    assert (len(text), len(category or ""), len(brand or ""), price) == (512, 256, 64, None)


def test_tags_items_are_interleaved_by_rank_without_repeats() -> None:
    assert interleave([["a1", "a2", "a3"], ["b1", "a1"], []], 10) == ["a1", "b1", "a2", "a3"]
    assert interleave([["a1", "a2"], ["b1", "b2"]], 3) == ["a1", "b1", "a2"]
    assert interleave([], 5) == []


def test_a_record_carries_items_only_where_a_tag_has_some() -> None:
    record = IntentRecord(
        user_id="u", version=1, context_version=1, trigger="live", event_time=T0, planned_at=T0, model="none",
        tags=[IntentTag(tag="kettles", explanation="You viewed kettles.", source="live", items=["k2", "k1"]),
              IntentTag(tag="teapots", explanation="You viewed teapots.", source="live")],
    )  # fmt: skip
    data = orjson.loads(record.encode_written(T0))
    assert data["tags"][0]["items"] == ["k2", "k1"]
    assert "items" not in data["tags"][1]  # optional: absent, not empty
    assert record.items(5) == ["k2", "k1"]
    with pytest.raises(ValueError, match="at most 20"):
        IntentTag(tag="kettles", explanation="You viewed kettles.", items=[f"i{n}" for n in range(21)])


def test_an_item_keeps_the_price_it_was_described_with() -> None:
    catalog = Catalog()
    catalog.add(
        [Sighting("k1", "bosch kettle", None, "bosch", T0.timestamp(), 1.0, 39.5), seen("k2", "teapot")]
    )
    assert catalog.prices == {catalog.rows["k1"]: 39.5}


def test_the_catalog_knows_the_brand_and_category_words_of_its_items() -> None:
    catalog = Catalog()
    catalog.add(
        [
            seen("k1", "bosch kettle", category="appliances.kitchen.kettle", brand="bosch"),
            seen("t1", "teapot"),
        ]
    )
    assert catalog.entities == {"appliance", "kitchen", "kettle", "bosch"}  # titles alone name none


def described(*items: str) -> Catalog:
    catalog = Catalog()
    catalog.add([seen(item, f"item {item}") for item in items])
    return catalog


def test_an_item_is_paired_with_the_users_previous_distinct_items_not_searches_or_itself() -> None:
    recent = [{"item": "a"}, {}, {"item": "b"}, {"item": "a"}, {"item": "c"}, {"item": "c"}]
    assert recent_items(recent) == ["c", "a", "b"]  # newest first, each once
    assert recent_items([{"item": x} for x in "abcde"]) == ["e", "d", "c"]  # the last three
    assert co_view_pairs(recent, event(1, "d", "item d")) == [("c", "d"), ("a", "d"), ("b", "d")]
    assert co_view_pairs(recent, event(2, "a", "item a")) == [("c", "a"), ("b", "a")]
    assert co_view_pairs(recent, event(3, None, "kettle", action="search")) == []
    assert co_view_pairs(recent, event(4, "x", None)) == []  # no description: no catalog row
    assert co_view_pairs([], event(5, "d", "item d")) == []


def test_items_taken_together_most_often_come_first_and_the_users_own_are_left_out() -> None:
    catalog = described("a", "b", "c", "d", "e")
    assert (
        catalog.co_view([("a", "b", 1), ("a", "c", 3), ("d", "b", 2), ("a", "ghost", 5), ("a", "a", 9)]) == 3
    )
    assert catalog.co_viewed(["a"]) == ["c", "b"]
    assert catalog.co_viewed(["b"]) == ["d", "a"]  # both ways
    assert catalog.co_viewed(["a", "d"]) == ["b", "c"]  # counts added up: b 1 + 2
    assert catalog.co_viewed(["a", "d"], exclude=["b"]) == ["c"]
    assert catalog.co_viewed(["a"], 1) == ["c"]
    assert catalog.co_viewed(["ghost", "e"]) == []  # unknown, or never taken with anything


def test_an_item_keeps_its_most_frequent_partners_the_lightest_making_room() -> None:
    catalog = described("hub", *(f"p{n}" for n in range(20)))
    catalog.neighbours = 4
    catalog.co_view([("hub", "p0", 5), ("hub", "p1", 4), ("hub", "p2", 3), ("hub", "p3", 1)])
    catalog.co_view([("hub", f"p{n}", 1) for n in range(4, 20)])  # a long tail of one-offs
    assert len(catalog.co[catalog.rows["hub"]]) == 4
    assert catalog.co_viewed(["hub"])[:3] == ["p0", "p1", "p2"]  # the frequent ones stay


@pytest.mark.parametrize(
    "row",
    [
        None,
        "a,b,1",
        ["a", "b"],
        ["a", "b", 1, 2],
        ["a", "", 1],
        ["k" * 129, "b", 1],
        [7, "b", 1],
        ["a", "b", 0],
        ["a", "b", -2],
        ["a", "b", 1.5],
        ["a", "b", True],
        ["a", "b", 10**12],
    ],
)
def test_a_feed_row_that_is_not_a_pair_is_refused(row: object) -> None:
    with pytest.raises(ValueError, match=r"row|item id|times"):
        pair(row)


def test_a_feed_shows_the_tags_items_in_turn_with_the_co_viewed_and_the_categorys_popular() -> None:
    assert feed_items([["a1", "a2"], ["b1"]], ["c1", "a1", "c2"], [], 5) == ["a1", "c1", "b1", "a2", "c2"]
    assert feed_items([["a1", "a2"]], ["c1", "c2"], ["p1", "c1", "p2"], 6) == [
        "a1",
        "c1",
        "p1",
        "a2",
        "c2",
        "p2",
    ]
    assert feed_items([], ["c1", "c2"], [], 5) == ["c1", "c2"]
    assert feed_items([], [], ["p1"], 5) == ["p1"]
    assert feed_items([["a1", "a2", "a3"]], [], [], 2) == ["a1", "a2"]
    record = IntentRecord(
        user_id="u", version=1, context_version=1, trigger="live", event_time=T0, planned_at=T0, model="none",
        tags=[IntentTag(tag="kettles", explanation="You viewed kettles.", source="live", items=["k1"])],
        co_viewed=["t1", "t2"], category_popular=["p1"],
    )  # fmt: skip
    assert record.items(4) == ["k1", "t1", "p1", "t2"]
    written = orjson.loads(record.encode_written(T0))
    assert (written["co_viewed"], written["category_popular"]) == (["t1", "t2"], ["p1"])
    empty = orjson.loads(
        record.model_copy(update={"co_viewed": [], "category_popular": []}).encode_written(T0)
    )
    assert "co_viewed" not in empty
    assert "category_popular" not in empty
    for field in ("co_viewed", "category_popular"):
        with pytest.raises(ValueError, match="at most 50"):
            record.model_validate(record.model_dump() | {field: [f"i{n}" for n in range(51)]})


def test_a_categorys_bestsellers_are_its_own_items_most_popular_now() -> None:
    catalog = Catalog()
    catalog.add([
        seen("k1", "kettle", category="kitchen.kettle", weight=1.0),
        seen("k2", "steel kettle", category="kitchen.kettle", weight=5.0),
        seen("k3", "glass kettle", category="kitchen.kettle", weight=3.0),
        seen("t1", "toaster", category="kitchen.toaster", weight=9.0),
        seen("x1", "kettle descaler", weight=20.0),  # no category: in none
    ])  # fmt: skip
    now = T0.timestamp()
    assert catalog.bestsellers("kitchen.kettle", now, 5) == ["k2", "k3", "k1"]
    assert catalog.bestsellers("kitchen.kettle", now, 2, exclude=["k2"]) == ["k3", "k1"]
    assert catalog.bestsellers("kitchen", now, 5) == []  # the exact path, not a prefix
    assert catalog.bestsellers("garden.hose", now, 5) == []
    catalog.add([seen("k1", "kettle", category="kitchen.kettle", at=DAY, weight=10.0)])  # k1 again: one row
    assert catalog.bestsellers("kitchen.kettle", now + DAY, 5) == ["k1", "k2", "k3"]


def test_the_latest_category_is_the_newest_items_not_a_searchs() -> None:
    recent = [
        {"item": "a", "category": "kitchen.kettle"},
        {"item": "b"},  # no category
        {"category": "garden.hose", "text": "hose"},  # a search: no item
    ]
    assert latest_category(recent) == "kitchen.kettle"
    assert latest_category([*recent, {"item": "c", "category": "garden.hose"}]) == "garden.hose"
    assert latest_category([{"item": "b"}]) is None
    assert latest_category([]) is None
