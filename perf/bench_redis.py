"""``intentstream bench redis``: the intent store against a real local redis-server.

Measures, in one run and on one server: versioned pipelined writes (and, as the baseline,
plain pipelined HSETs of the same bytes without the version check), single-user read
latency, batched reads, and a concurrent out-of-order writer race watched by a reader that
counts torn reads (hash ``version`` disagreeing with the record inside) and stale
overwrites (a user's version going backwards).
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson

from intentstream.deploy import stack
from intentstream.progress import say
from intentstream.reader import IntentReader
from intentstream.schemas.codec import encode
from intentstream.schemas.record import IntentRecord, IntentTag
from intentstream.store import IntentStore, RedisClient, connect

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def make_record(user: int, version: int) -> IntentRecord:
    """A realistic record: four tags with a sentence each (about 700 bytes of JSON)."""
    return IntentRecord(
        user_id=f"u{user}",
        version=version,
        context_version=version,
        trigger="strong_event:cart",
        tags=[
            IntentTag(
                tag=f"interest {i} of user {user}", explanation=f"Viewed items of kind {i} several times."
            )
            for i in range(4)
        ],
        event_time=NOW,
        planned_at=NOW,
        model="qwen2.5-coder-0.5b-instruct",
    )


async def writes_per_s(
    users: int, batch: int, writers: int, write: Callable[[list[IntentRecord]], Awaitable[object]]
) -> float:
    """Records per second when ``writers`` concurrent writers drain ``users`` records in
    batches of ``batch`` through ``write``."""
    records = [make_record(u, 1) for u in range(users)]
    queue: asyncio.Queue[list[IntentRecord]] = asyncio.Queue()
    for i in range(0, users, batch):
        queue.put_nowait(records[i : i + batch])

    async def drain() -> None:
        while not queue.empty():
            await write(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(drain() for _ in range(writers)))
    return users / (time.perf_counter() - started)


async def plain_hset(client: RedisClient, records: list[IntentRecord]) -> None:
    """Baseline writer: the same records, stamped and encoded the same way, as plain
    pipelined HSETs: no version check, no script, no notification."""
    async with client.pipeline(transaction=False) as pipe:
        for record in records:
            pipe.hset(
                f"plain:{{{record.user_id}}}",
                mapping={"version": record.version, "record": record.encode_written(NOW)},
            )
        await pipe.execute()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bench_reads(reader: IntentReader, users: int, samples: int, batch: int) -> dict[str, float]:
    rng = random.Random(1)
    latencies = []
    for _ in range(samples):
        user = f"u{rng.randrange(users)}"
        started = time.perf_counter()
        found = await reader.get(user)
        latencies.append((time.perf_counter() - started) * 1000)
        assert found, user
    batches = [[f"u{rng.randrange(users)}" for _ in range(batch)] for _ in range(max(1, samples // batch))]
    started = time.perf_counter()
    for ids in batches:
        await reader.get_many(ids)
    batch_rate = len(batches) * batch / (time.perf_counter() - started)
    return {
        "read_p50_ms": round(statistics.median(latencies), 4),
        "read_p99_ms": round(percentile(latencies, 0.99), 4),
        "batch_read_users_per_s": round(batch_rate),
    }


async def race(
    store: IntentStore, client: RedisClient, users: int, versions: int, writers: int
) -> dict[str, int]:
    """Writers deliver every version of every user in a shuffled order while a reader polls
    the same keys. Counts torn reads and versions that went backwards."""
    work = [(u, v) for u in range(users) for v in range(1, versions + 1)]
    random.Random(7).shuffle(work)
    shards = [work[i::writers] for i in range(writers)]
    done = asyncio.Event()
    counts = {"torn_reads": 0, "stale_overwrites": 0, "race_reads": 0}
    seen: dict[str, int] = {}

    async def writer(items: list[tuple[int, int]]) -> None:
        for i in range(0, len(items), 50):
            await store.write_many([make_record(u, v) for u, v in items[i : i + 50]], NOW)

    async def reader() -> None:
        keys = [store.key(f"u{u}") for u in range(users)]
        while not done.is_set():
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                replies = await pipe.execute()
            for u, fields in enumerate(replies):
                if not fields:
                    continue
                counts["race_reads"] += 1
                version = int(fields[b"version"])
                if orjson.loads(fields[b"record"])["version"] != version:
                    counts["torn_reads"] += 1
                if version < seen.get(f"u{u}", 0):
                    counts["stale_overwrites"] += 1
                seen[f"u{u}"] = version

    watcher = asyncio.create_task(reader())
    await asyncio.gather(*(writer(s) for s in shards))
    done.set()
    await watcher
    for u in range(users):  # after the race every user must hold its newest version
        if await store.version(f"u{u}") != versions:
            counts["stale_overwrites"] += 1
    return counts


async def run(redis_url: str, users: int) -> dict[str, Any]:
    client = connect(redis_url)
    try:
        await client.flushdb()
        store = IntentStore(client, changes_stream="bench:changes")
        say(f"versioned pipelined writes of {users} users ...")
        writes = await writes_per_s(users, 1000, 2, lambda records: store.write_many(records, NOW))
        say("baseline: plain pipelined HSET ...")
        plain = await writes_per_s(users, 1000, 2, lambda records: plain_hset(client, records))
        say("reads ...")
        reads = await bench_reads(IntentReader(client, changes_stream="bench:changes"), users, 5000, 100)
        say("out-of-order writers racing a reader ...")
        racing = await race(store, client, users=200, versions=50, writers=4)
        await client.flushdb()
    finally:
        await client.aclose()
    return {
        "users": users,
        "writes_per_s": round(writes),
        "baseline_plain_hset_writes_per_s": round(plain),
        "versioned_vs_plain": round(writes / plain, 3),
        **reads,
        **racing,
        "record_bytes": len(encode(make_record(0, 1))),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "method": "asyncio redis-py, one local redis-server on loopback; writes: 2 concurrent writers "
        "of 1000-record batches (store: one script call per 500 records; baseline: pipelined HSET); "
        "reads: 5000 single-user reads, then batches of 100 in one round trip each",
    }


def bench_redis(users: int, redis_url: str | None) -> dict[str, Any]:
    """Run the benchmark against ``redis_url``, or a throwaway local redis-server."""
    if redis_url:
        return asyncio.run(run(redis_url, users))
    with TemporaryDirectory() as home:
        server = stack.start_redis(Path(home))
        try:
            result = asyncio.run(run(server.address, users))
            result["redis_server"] = "local, started by the benchmark"
            return result
        finally:
            stack.stop(server)
