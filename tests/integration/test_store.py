"""The Redis store on a real redis-server: atomic, monotonic, notifying."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from intentstream.store import CorruptRecord, IntentStore
from tests.helpers import NOW
from tests.helpers import intent_record as record

pytestmark = pytest.mark.integration


async def test_newer_plan_is_written_and_read_back(redis_client: aioredis.Redis) -> None:
    store = IntentStore(redis_client)
    assert await store.write(record(3), NOW)
    got = await store.get("u1")
    assert got is not None
    assert got.version == 3
    assert got.written_at == NOW
    assert got.tags[0].tag == "tag v3"


async def test_stale_plan_never_overwrites_newer(redis_client: aioredis.Redis) -> None:
    store = IntentStore(redis_client)
    assert await store.write(record(5), NOW)
    assert not await store.write(record(4), NOW)
    assert not await store.write(record(5), NOW)  # equal is not newer
    got = await store.get("u1")
    assert got is not None
    assert got.version == 5


async def test_only_accepted_writes_notify(redis_client: aioredis.Redis) -> None:
    store = IntentStore(redis_client, changes_stream="changes")
    await store.write(record(2), NOW)
    await store.write(record(1), NOW)
    await store.write(record(3), NOW)
    entries = await redis_client.xrange("changes") or []
    assert [(f[b"user"], f[b"version"]) for _, f in entries if f] == [(b"u1", b"2"), (b"u1", b"3")]


async def test_record_expires(redis_client: aioredis.Redis) -> None:
    store = IntentStore(redis_client, ttl_s=1)
    await store.write(record(1), NOW)
    assert 0 < await redis_client.pttl(store.key("u1")) <= 1000
    await asyncio.sleep(1.2)
    assert await store.get("u1") is None


async def test_missing_user_is_none(redis_client: aioredis.Redis) -> None:
    assert await IntentStore(redis_client).get("nobody") is None


async def test_corrupt_value_is_reported_clearly(redis_client: aioredis.Redis) -> None:
    store = IntentStore(redis_client)
    await redis_client.hset(store.key("u1"), mapping={"version": 1, "record": b"\x00not json"})
    with pytest.raises(CorruptRecord, match="u1"):
        await store.get("u1")


async def test_concurrent_out_of_order_writers_end_at_the_newest(redis_client: aioredis.Redis) -> None:
    store = IntentStore(redis_client)
    versions = list(range(1, 201))
    random.Random(7).shuffle(versions)
    results = await asyncio.gather(*(store.write(record(v), NOW + timedelta(seconds=v)) for v in versions))
    got = await store.get("u1")
    assert got is not None
    assert got.version == 200
    assert sum(results) == await redis_client.xlen("intent:changes")


async def test_key_is_hash_tagged_per_user(redis_client: aioredis.Redis) -> None:
    assert IntentStore(redis_client, prefix="intent").key("42") == "intent:{42}"
