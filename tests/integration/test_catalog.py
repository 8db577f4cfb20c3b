"""The item catalog on a real redis-server: sightings and co-viewed pairs shared through its
feed, a second worker (or a restarted one) rebuilding the same catalog from it, and the
records the stream writes carrying the items of each tag, the user's purchases left out, the
items co-viewed with the user's last ones and the most popular of their last category."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
import redis
import redis.asyncio as aioredis

from intentstream.reader import IntentReader
from intentstream.schemas.events import BehaviorEvent
from intentstream.schemas.record import LLMPlan, PlannedTag
from intentstream.store import IntentStore
from intentstream.stream.catalog import Catalog, CatalogFeed, co_view_pairs, sightings
from intentstream.stream.context import ContextShape, UserContext, apply_event
from intentstream.stream.entities import EntityCache
from intentstream.stream.records import RecordWriter
from tests.helpers import NOW, event_dict

pytestmark = pytest.mark.integration

KETTLES = [
    {"item_id": f"k{n}", "item_text": f"{brand} electric kettle", "category": "appliances.kitchen.kettle",
     "brand": brand}
    for n, brand in enumerate(["bosch", "tefal", "philips", "smeg"])
]  # fmt: skip
PHONE = {"item_id": "p1", "item_text": "samsung galaxy smartphone", "category": "electronics.smartphone"}


def events(user: str, *items: dict, action: str = "view") -> list[BehaviorEvent]:  # type: ignore[type-arg]
    return [
        BehaviorEvent.model_validate(event_dict(n, user=user, action=action, **item))
        for n, item in enumerate(items)
    ]


async def test_every_worker_folds_the_same_catalog_from_the_shared_feed(redis_client: aioredis.Redis) -> None:
    prefix = "catalog-test-a"
    first, mine = CatalogFeed(redis_client, prefix), Catalog()
    first.observe(sightings(events("shopper", *KETTLES, PHONE)), mine)
    first.observe(sightings(events("other", KETTLES[1], KETTLES[1], action="purchase")), mine)
    assert await first.flush() == 5  # one row per item, however often it was seen
    assert await first.flush() == 0
    await redis_client.xadd(f"{prefix}:catalog", {"not": "ours"})  # someone else's entries
    await redis_client.xadd(f"{prefix}:catalog", {"s": b'[["ghost", 1.0, 1.0], ["k0", "x", 1]]'})
    while await first.read(mine):
        pass
    theirs = Catalog()
    restarted = CatalogFeed(redis_client, prefix)  # another worker, or this one after a restart
    while await restarted.read(theirs):
        pass
    assert len(mine) == len(theirs) == 5
    assert restarted.skipped == 3  # the foreign entry, the undescribed item, the malformed row
    now = NOW.timestamp()
    assert mine.candidates(["electric kettle"], now)[0][0] == "k1"  # the one people bought
    assert mine.candidates(["electric kettle"], now) == theirs.candidates(["electric kettle"], now)
    assert await redis_client.hlen(f"{prefix}:catalog:items") == 5
    assert theirs.prices[theirs.rows["k0"]] == mine.prices[mine.rows["k0"]]  # described with its price


async def test_a_flush_that_fails_keeps_what_it_held(redis_client: aioredis.Redis) -> None:
    feed, catalog = CatalogFeed(redis_client, "catalog-test-c"), Catalog()
    feed.observe(sightings(events("shopper", *KETTLES)), catalog)
    await redis_client.set("catalog-test-c:catalog", "not a stream")  # XADD will fail
    with pytest.raises(redis.exceptions.ResponseError):
        await feed.flush()
    feed.observe(sightings(events("shopper", KETTLES[0])), catalog)
    await redis_client.delete("catalog-test-c:catalog")
    assert await feed.flush() == 4  # nothing was lost; k0 counted twice
    while await feed.read(catalog):
        pass
    assert (
        catalog.popularity([catalog.rows["k0"]], NOW.timestamp())[0]
        > catalog.popularity([catalog.rows["k1"]], NOW.timestamp())[0]
    )


async def test_a_live_record_carries_each_tags_items_and_a_reader_gets_them_in_one_round_trip(
    redis_client: aioredis.Redis,
) -> None:
    catalog = Catalog()
    catalog.add(sightings(events("crowd", *KETTLES, PHONE)))
    catalog.add(sightings(events("crowd", KETTLES[2], KETTLES[2], action="purchase")))
    store = IntentStore(redis_client, prefix="catalog-test-b")
    records = RecordWriter(store, ContextShape(), live_tags=3, catalog=catalog, items_per_tag=3)
    ctx = UserContext("buyer")
    shape, entities = ContextShape(), EntityCache()
    for e in events("buyer", KETTLES[0], KETTLES[0], KETTLES[2]) + events(
        "buyer", KETTLES[2], action="purchase"
    ):
        apply_event(ctx, e.model_copy(update={"event_id": f"b-{e.event_id}-{e.action}"}), shape, entities)
    assert (await records.write_live([ctx], NOW + timedelta(minutes=1))).written == 1
    reader = IntentReader(redis_client, prefix="catalog-test-b")
    found = await reader.items("buyer", 5)
    assert found
    assert "k2" not in found  # just bought: not offered again at once
    assert set(found) <= {"k0", "k1", "k3"}
    record = (await reader.get("buyer")).record
    assert record is not None
    assert all(len(t.items) <= 3 for t in record.tags)
    assert await reader.items("nobody", 5) == []


async def test_co_viewed_pairs_reach_every_worker_through_the_feed_and_survive_a_failed_flush(
    redis_client: aioredis.Redis,
) -> None:
    prefix = "catalog-test-d"
    feed, mine = CatalogFeed(redis_client, prefix), Catalog()
    ctx, shape, entities = UserContext("shopper"), ContextShape(), EntityCache()
    feed.observe(sightings(events("shopper", *KETTLES, PHONE)), mine)  # the items first, as a batch does
    for e in events("shopper", KETTLES[0], KETTLES[1], KETTLES[2], PHONE):  # pairs as the batch makes them
        feed.observe_pairs(co_view_pairs(ctx.recent, e), mine)
        apply_event(ctx, e, shape, entities)
    assert mine.co_viewed(["p1"]) == ["k2", "k1", "k0"]  # in this worker's catalog at once
    await redis_client.set(f"{prefix}:catalog", "not a stream")  # XADD will fail
    with pytest.raises(redis.exceptions.ResponseError):
        await feed.flush()
    await redis_client.delete(f"{prefix}:catalog")
    assert await feed.flush() == 5  # the items, then the pairs: nothing lost
    await redis_client.xadd(f"{prefix}:catalog", {"c": b'[["k0", "k1", 2], ["k0", "", 1], ["k0", "k1", -1]]'})
    await redis_client.xadd(f"{prefix}:catalog", {"c": b"{oops"})
    await redis_client.xadd(f"{prefix}:catalog", {"c": orjson.dumps([["ghost", "k0", 3]])})  # undescribed
    theirs, other = Catalog(), CatalogFeed(redis_client, prefix)  # another worker
    while await other.read(theirs):
        pass
    assert other.skipped == 3  # the two malformed rows and the entry that is not JSON
    assert theirs.co_viewed(["k0"]) == ["k1", "k2", "p1"]  # k1 twice more, from the extra entry
    assert theirs.co_viewed(["p1"]) == ["k2", "k1", "k0"]  # the three before it, the nearest first
    assert theirs.co_viewed(["ghost"]) == []
    while await feed.read(mine):  # its own entries come back: folded once, when observed
        pass
    assert mine.co_viewed(["p1"]) == theirs.co_viewed(["p1"])
    assert mine.co_viewed(["k0"]) == theirs.co_viewed(["k0"])


async def test_a_worker_offers_what_it_just_saw_at_once_and_counts_it_once(
    redis_client: aioredis.Redis,
) -> None:
    prefix = "catalog-test-f"
    feed, mine = CatalogFeed(redis_client, prefix), Catalog()
    feed.observe(sightings(events("shopper", KETTLES[0], KETTLES[0], action="purchase")), mine)
    assert mine.candidates(["kettle"], NOW.timestamp())[0] == ["k0"]  # before any flush
    before = mine.popularity([mine.rows["k0"]], NOW.timestamp())[0]
    assert await feed.flush() == 1
    while await feed.read(mine):
        pass
    assert mine.popularity([mine.rows["k0"]], NOW.timestamp())[0] == before  # not folded twice
    assert feed.skipped == 0  # its own entries are not foreign ones
    theirs, other = Catalog(), CatalogFeed(redis_client, prefix)  # another worker, or this one restarted
    while await other.read(theirs):
        pass
    assert theirs.popularity([theirs.rows["k0"]], NOW.timestamp())[0] == pytest.approx(before)


async def test_a_live_record_carries_the_co_viewed_items_and_its_categorys_bestsellers_and_a_plan_keeps_them(
    redis_client: aioredis.Redis,
) -> None:
    catalog = Catalog()
    catalog.add(sightings(events("crowd", *KETTLES, PHONE)))
    catalog.co_view([("k0", "k3", 5), ("k0", "p1", 2), ("k0", "k1", 1), ("p1", "k2", 1)])
    store = IntentStore(redis_client, prefix="catalog-test-e")
    catalog.add(sightings(events("crowd", KETTLES[3], KETTLES[3], PHONE, PHONE, PHONE)))  # k3 sells best
    records = RecordWriter(
        store, ContextShape(), live_tags=3, catalog=catalog, items_per_tag=2, co_viewed=2, category_popular=2
    )
    ctx, shape, entities = UserContext("buyer"), ContextShape(), EntityCache()
    for e in events("buyer", KETTLES[1], KETTLES[0]):
        apply_event(ctx, e, shape, entities)
    assert (await records.write_live([ctx], NOW + timedelta(minutes=1))).written == 1
    reader = IntentReader(redis_client, prefix="catalog-test-e")
    record = (await reader.get("buyer")).record
    assert record is not None
    assert record.co_viewed == ["k3", "p1"]  # k1 is their own; two at most
    assert record.category_popular == ["k3", "k2"]  # their last item's category, their own left out
    assert record.items(20)[1] == "k3"  # second: the first co-viewed after the first tag's first item
    kettles = PlannedTag(tag="kettles", explanation="Viewed kettles.", cites=["bosch electric kettle"])
    plan = LLMPlan(
        user_id="buyer", context_version=ctx.version, trigger="first_plan", event_time=NOW, planned_at=NOW,
        model="m", verdict="good", tags=[kettles],
    )  # fmt: skip
    landed = await records.land_plan(plan, NOW + timedelta(minutes=2))
    assert landed is not None
    assert (landed.co_viewed, landed.category_popular) == (["k3", "p1"], ["k3", "k2"])


def test_bench_items_reports_build_memory_search_and_lookups_against_their_baselines() -> None:
    from intentstream.perf.bench_items import bench_items

    result = bench_items(items=3000, users=40)
    assert result["catalog"]["items"] == 3000
    assert result["catalog"]["build_items_per_s"] > 0
    assert result["candidates"]["tags_with_items"] > 0.9 * result["candidates"]["tags"]
    assert result["reader"]["items_per_lookup_mean"] > 0
    assert 0 < result["co_viewed"]["partners_per_item_mean"] <= result["co_viewed"]["partners_kept_per_item"]
    assert result["reader"]["co_viewed_per_record_mean"] > 0  # the lookups read co-viewed items too
    assert result["reader"]["category_popular_per_record_mean"] > 0  # and their category's most popular
    for name in ("lookup_p50_ms", "lookup_p99_ms", "baseline_get_without_items_p99_ms"):
        assert result["reader"][name] > 0
