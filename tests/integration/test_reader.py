"""The reader client and the store's guarantees under concurrency, on a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intentstream.deploy import stack
from intentstream.reader import IntentReader, SyncIntentReader
from intentstream.schemas.record import IntentRecord
from intentstream.store import IntentStore, connect
from tests.helpers import NOW
from tests.helpers import intent_record as record

pytestmark = pytest.mark.integration


async def test_missing_user_is_an_explicit_empty_result(redis_client: aioredis.Redis) -> None:
    found = await IntentReader(redis_client).get("nobody")
    assert not found
    assert found.record is None
    assert found.problem is None
    assert found.tags == []


async def test_get_many_in_one_round_trip_reports_each_user(redis_client: aioredis.Redis) -> None:
    store, reader = IntentStore(redis_client), IntentReader(redis_client)
    await store.write_many([record(3, "a"), record(5, "b")], NOW)
    await redis_client.hset(store.key("broken"), mapping={"version": 1, "record": b"{oops"})
    a, missing, broken, b = await reader.get_many(["a", "missing", "broken", "b"])
    assert a.record is not None
    assert a.record.version == 3
    assert not missing
    assert missing.problem is None
    assert not broken
    assert broken.problem is not None
    assert "broken" in broken.problem
    assert b.tags[0].tag == "tag v5"


def test_blocking_reader_reads_the_same_records(redis_server: stack.Service) -> None:
    async def seed() -> None:
        client = connect(redis_server.address)
        await IntentStore(client).write_many([record(2, "s1"), record(4, "s2")], NOW)
        await client.aclose()

    asyncio.run(seed())
    reader = SyncIntentReader.from_url(redis_server.address)
    try:
        assert reader.get("s1").record == IntentRecord.model_validate(reader.get("s1").record)
        assert [lk.record.version if lk.record else None for lk in reader.get_many(["s2", "nope", "s1"])] == [
            4,
            None,
            2,
        ]
        assert {(c.user_id, c.version) for c in reader.changes_since("0")} >= {("s1", 2), ("s2", 4)}
    finally:
        reader.close()


async def test_subscribers_see_accepted_writes_only(redis_client: aioredis.Redis) -> None:
    store, reader = IntentStore(redis_client), IntentReader(redis_client)
    received: list[tuple[str, int, int | None]] = []

    async def listen() -> None:
        async for change in reader.changes("0", block_ms=200):
            received.append((change.user_id, change.version, change.context_version))
            if len(received) == 3:
                return

    listener = asyncio.create_task(listen())
    await store.write(record(1), NOW)
    await store.write(record(3), NOW)
    await store.write(record(2), NOW)  # stale: rejected, no notification
    await store.write(record(4, "u2"), NOW)
    await asyncio.wait_for(listener, 10)
    assert received == [("u1", 1, 1), ("u1", 3, 3), ("u2", 4, 4)]


async def test_record_without_newer_optional_fields_still_reads(redis_client: aioredis.Redis) -> None:
    """A v1 record as an older writer made it: no written_at, no verdict, no tag source or
    last_seen, no llm_context_version, extra unknown fields."""
    store = IntentStore(redis_client)
    old = orjson.loads(orjson.dumps(record(7).model_dump(mode="json")))
    del old["written_at"], old["verdict"], old["llm_context_version"]
    old["tags"] = [{"tag": t["tag"], "explanation": t["explanation"]} for t in old["tags"]]
    old["legacy_field"] = {"from": "an older writer"}
    await redis_client.hset(store.key("u1"), mapping={"version": 7, "record": orjson.dumps(old)})
    found = await IntentReader(redis_client).get("u1")
    assert found.record is not None
    assert found.record.verdict == "unjudged"
    assert found.record.version == 7
    assert [t.source for t in found.record.tags] == ["llm", "llm"]  # as the contract page says


async def test_unknown_schema_version_is_a_problem_not_a_crash(redis_client: aioredis.Redis) -> None:
    store = IntentStore(redis_client)
    future = {**record(7).model_dump(mode="json"), "schema_version": 2}
    await redis_client.hset(store.key("u1"), mapping={"version": 7, "record": orjson.dumps(future)})
    found = await IntentReader(redis_client).get("u1")
    assert not found
    assert found.problem is not None
    assert "schema_version" in found.problem


async def test_readers_hammering_during_writes_never_see_a_torn_record(redis_client: aioredis.Redis) -> None:
    store = IntentStore(redis_client)
    users = [f"h{i}" for i in range(20)]
    work = [(u, v) for u in users for v in range(1, 41)]
    random.Random(3).shuffle(work)
    done = asyncio.Event()
    torn = backwards = reads = 0
    last: dict[str, int] = {}

    async def hammer() -> None:
        nonlocal torn, backwards, reads
        while not done.is_set():
            for user in users:
                fields = await redis_client.hgetall(store.key(user))
                if fields:
                    reads += 1
                    version = int(fields[b"version"])
                    torn += orjson.loads(fields[b"record"])["version"] != version
                    backwards += version < last.get(user, 0)
                    last[user] = version

    async def write(items: list[tuple[str, int]]) -> None:
        for user, version in items:
            await store.write(record(version, user), NOW)

    readers = [asyncio.create_task(hammer()) for _ in range(2)]
    await asyncio.gather(*(write(work[i::4]) for i in range(4)))
    done.set()
    await asyncio.gather(*readers)
    assert reads > 0
    assert (torn, backwards) == (0, 0)
    assert [await store.version(u) for u in users] == [40] * len(users)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    versions=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=30),
    batch=st.integers(min_value=1, max_value=8),
)
def test_any_delivery_order_ends_at_the_newest_version(
    redis_server: stack.Service, versions: list[int], batch: int
) -> None:
    """Property: whatever order and batching versions arrive in, the stored version is the
    maximum, and the accepted writes form a strictly increasing sequence."""

    async def scenario() -> tuple[int, list[int]]:
        client = connect(redis_server.address)
        try:
            store = IntentStore(client, prefix="prop", changes_stream="prop:changes")
            await client.delete(store.key("p"), "prop:changes")
            accepted: list[int] = []
            for i in range(0, len(versions), batch):
                chunk = versions[i : i + batch]
                flags = await store.write_many([record(v, "p") for v in chunk], NOW)
                accepted += [v for v, ok in zip(chunk, flags, strict=True) if ok]
            return await store.version("p"), accepted
        finally:
            await client.aclose()

    final, accepted = asyncio.run(scenario())
    assert final == max(versions)
    assert accepted == sorted(set(accepted))
    assert accepted[-1] == max(versions)


async def test_writer_survives_a_redis_restart_mid_burst(tmp_path: Path) -> None:
    server = stack.start_redis(tmp_path / "a")
    client = connect(server.address)
    store = IntentStore(client)
    halfway = asyncio.Event()

    async def burst() -> None:
        for version in range(1, 301):
            await store.write_many(
                [record(version, f"r{i}") for i in range(20)], NOW + timedelta(seconds=version)
            )
            if version == 50:
                halfway.set()

    try:
        task = asyncio.create_task(burst())
        await asyncio.wait_for(halfway.wait(), 30)
        stack.stop(server, timeout_s=0)  # SIGKILL-like: no persistence, everything is lost
        await asyncio.sleep(0.3)
        server = stack.start_redis(tmp_path / "b", port=server.port)
        await asyncio.wait_for(task, 60)  # the writer retried through the outage
        for i in range(20):
            fields = await client.hgetall(store.key(f"r{i}"))
            assert int(fields[b"version"]) == 300
            assert orjson.loads(fields[b"record"])["version"] == 300
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
        stack.stop(server)
