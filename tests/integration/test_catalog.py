"""The item catalog on a real redis-server: sightings shared through its feed, a second
worker (or a restarted one) rebuilding the same catalog from it, and the records the stream
writes carrying the items of each tag, the user's purchases left out."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
import redis.asyncio as aioredis

from intentstream.reader import IntentReader
from intentstream.schemas.events import BehaviorEvent
from intentstream.store import IntentStore
from intentstream.stream.catalog import Catalog, CatalogFeed, sightings
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


def test_bench_items_reports_build_memory_search_and_lookups_against_their_baselines() -> None:
    from intentstream.perf.bench_items import bench_items

    result = bench_items(items=3000, users=40)
    assert result["catalog"]["items"] == 3000
    assert result["catalog"]["build_items_per_s"] > 0
    assert result["candidates"]["tags_with_items"] > 0.9 * result["candidates"]["tags"]
    assert result["reader"]["items_per_lookup_mean"] > 0
    for name in ("lookup_p50_ms", "lookup_p99_ms", "baseline_get_without_items_p99_ms"):
        assert result["reader"][name] > 0
