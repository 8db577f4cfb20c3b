"""``intentstream bench ingest``: context-update throughput and freshness of one worker,
against two baselines measured in the same run, on the same broker and the same events.

1. N events are built from the REES46 log, looped with remapped user and event ids
   (``<user>~<loop>``) and time shifted by the log's span per loop, and published once.
2. ``raw_aiokafka_events_per_s``: a plain aiokafka consumer reads them, doing nothing.
3. ``naive_faust_events_per_s``: a faust agent doing the worker's validation and context
   update one event at a time, with a table set per event (perf/naive_faust.py).
4. ``events_per_s``: an intentstream worker (planner off) applies them: first batch
   received → last batch's contexts acknowledged by the broker (its own counters).
5. Freshness: the same worker, while events are published at half the measured rate for a
   while: event produced (its Kafka timestamp) → its context written and acknowledged.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import platform
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from intentstream.deploy import stack
from intentstream.kafka import KafkaSecurity, start_client
from intentstream.perf.demo import start_worker, stop_worker
from intentstream.perf.logs import load_events
from intentstream.progress import Meter, say
from intentstream.schemas.codec import encode
from intentstream.schemas.events import BehaviorEvent
from intentstream.settings import Settings
from intentstream.stream.stats import read_stats
from intentstream.stream.topics import ensure_topics


def remapped(base: list[BehaviorEvent], n: int, *, start_loop: int = 0) -> list[BehaviorEvent]:
    """``n`` events from ``base`` looped: loop k renames users and events ``~k`` and shifts
    time by k spans, so every loop is a new, later set of users with the log's shape."""
    span = base[-1].ts - base[0].ts + timedelta(seconds=1)
    out: list[BehaviorEvent] = []
    for loop in itertools.count(start_loop):
        for e in base:
            if len(out) == n:
                return out
            out.append(
                e.model_copy(
                    update={
                        "user_id": f"{e.user_id}~{loop}",
                        "event_id": f"{e.event_id}~{loop}",
                        "ts": e.ts + span * loop,
                    }
                )
            )
    return out


def _producer(bootstrap: str, security: KafkaSecurity) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        **security.options(),
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_batch_size=512 * 1024,
    )


async def publish(
    bootstrap: str,
    security: KafkaSecurity,
    topic: str,
    events: list[BehaviorEvent],
    rate: float | None = None,
) -> None:
    """Publish keyed by user; paced at ``rate`` per second when given."""
    producer = _producer(bootstrap, security)
    await start_client(producer, bootstrap, security)
    meter = Meter(f"publishing to {topic}", len(events))
    try:
        pending = []
        started = time.monotonic()
        for i, e in enumerate(events):
            if rate is not None and i % 50 == 0:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            pending.append(await producer.send(topic, encode(e), key=e.user_id.encode()))
            meter.advance()
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        meter.close()
        await producer.stop()


async def raw_consume_rate(bootstrap: str, security: KafkaSecurity, topic: str, n: int) -> float:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_bytes=32 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
        **security.options(),
    )
    await consumer.start()
    try:
        got, started = 0, 0.0
        while got < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            started = started or time.perf_counter()
            got += sum(len(records) for records in batch.values())
        return n / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def naive_faust_rate(settings: Settings, topic: str, n: int, work: Path, timeout_s: float) -> float:
    result = work / "naive.json"
    env = {
        **os.environ,
        "NAIVE_BOOTSTRAP": settings.kafka_bootstrap or "",
        "NAIVE_TOPIC": topic,
        "NAIVE_EVENTS": str(n),
        "NAIVE_PARTITIONS": str(settings.topic_partitions),
        "NAIVE_RESULT": str(result),
        "NAIVE_DATADIR": str(work / "naive-data"),
    }
    with (work / "naive.log").open("wb") as log:
        proc = subprocess.run(
            [sys.executable, "-m", "intentstream.perf.naive_faust", "worker", "-l", "warn"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=timeout_s,
            check=False,
        )
    if not result.exists():
        raise RuntimeError(f"the naive faust baseline failed (exit {proc.returncode}); see {work}/naive.log")
    return float(orjson.loads(result.read_bytes())["events_per_s"])


def wait_for_stats(stats_dir: Path, until: Any, timeout_s: float, what: str, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    meter = Meter(what)
    seen: int | None = None
    try:
        while time.monotonic() < deadline:
            for path in stats_dir.glob("*.json"):
                stats = read_stats(path)
                if stats is not None:
                    c = stats["counters"]
                    count = c["applied"] + c["duplicates"] + sum(c["dead_lettered"].values())
                    if seen is not None:
                        meter.advance(count - seen)
                    seen = count
                    if until(stats):
                        return stats
            time.sleep(0.5)
    finally:
        meter.close()
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
    raise TimeoutError(f"{what}: the worker did not get there within {timeout_s:.0f}s. Its log ends:\n{tail}")


def run(settings: Settings, n: int, work: Path) -> dict[str, Any]:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    base = sorted(load_events(settings.datasets_dir / "rees46" / "events.csv", "rees46"), key=lambda e: e.ts)
    events = remapped(base, n)
    asyncio.run(ensure_topics(bootstrap, settings))
    security = KafkaSecurity.from_settings(settings)
    asyncio.run(publish(bootstrap, security, settings.topic_behaviors, events))

    say("baseline: raw aiokafka consumer ...")
    raw = asyncio.run(raw_consume_rate(bootstrap, security, settings.topic_behaviors, n))
    say("baseline: naive faust agent ...")
    naive = naive_faust_rate(settings, settings.topic_behaviors, n, work, timeout_s=max(120.0, n / 500))

    say("intentstream worker ...")
    endpoints = stack.Endpoints(kafka_bootstrap=bootstrap, redis_url=None, llm_base_url=None)
    worker = start_worker(settings, endpoints, work / "worker.log", planner=False)
    stats_dir = settings.home / "workers"
    try:
        done = wait_for_stats(
            stats_dir,
            lambda s: s["counters"]["applied"] >= n,
            timeout_s=max(180.0, n / 1000),
            what="applying",
            log=work / "worker.log",
        )
        rate = float(done["events_per_s"])
        total, loop = n, n // len(base) + 1
        freshness: dict[str, dict[str, Any]] = {}
        for share in (2, 4):  # half the measured rate (the target's condition), then a quarter
            extra = remapped(base, max(2000, int(rate / share * 10)), start_loop=loop)
            loop += len(extra) // len(base) + 1
            say(f"freshness: {len(extra)} events at {rate / share:,.0f}/s (1/{share} of the measured rate)")
            asyncio.run(publish(bootstrap, security, settings.topic_behaviors, extra, rate=rate / share))
            total += len(extra)
            time.sleep(settings.stats_interval_s)
            fresh = wait_for_stats(
                stats_dir,
                lambda s, total=total: s["counters"]["applied"] >= total,
                timeout_s=120.0,
                what="freshness run",
                log=work / "worker.log",
            )
            freshness[f"1/{share}"] = {"events_per_s": round(rate / share), **fresh["freshness_ms"]}
    finally:
        stop_worker(worker)
    half = freshness["1/2"]
    return {
        "events": n,
        "users": done["users"],
        "events_per_s": round(rate),
        "raw_aiokafka_events_per_s": round(raw),
        "naive_faust_events_per_s": round(naive),
        "ratio_vs_naive_faust": round(rate / naive, 2),
        "freshness_rate_events_per_s": half["events_per_s"],
        "freshness_ms_p50": half.get("p50"),
        "freshness_ms_p95": half.get("p95"),
        "freshness_ms_p99": half.get("p99"),
        "freshness_by_rate": freshness,
        "bytes_per_user_context": done["bytes_per_context_mean"],
        # Finding what is new (stream/live.py): its share of the batch loop's apply time.
        "decide_share_of_apply": round(
            done["counters"]["seconds_decide"] / max(done["counters"]["seconds_apply"], 1e-9), 3
        ),
        # Trigger decisions while applying the N events at full speed (the cooldown is in
        # processing time, so a replay at full speed decides fewer than real time would).
        "replans_decided_per_1000_events": round(1000 * sum(done["counters"]["triggers"].values()) / n, 1),
        "replans_by_reason": done["counters"]["triggers"],
        "duplicates_skipped": fresh["counters"]["duplicates"],
        "dead_lettered": fresh["counters"]["dead_lettered"],
        "events_source": (
            f"REES46 log ({len(base)} events, {len({e.user_id for e in base})} users) looped "
            f"{-(-n // len(base))}x with user and event ids remapped to <id>~<loop> and time "
            "shifted by the log's span per loop"
        ),
        "broker": "Tansu (local, one process on loopback)",
        "partitions": settings.topic_partitions,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }


def bench_ingest(settings: Settings, n: int) -> dict[str, Any]:
    """Run on a throwaway local broker (or the one configured in KAFKA_BOOTSTRAP)."""
    tag = uuid.uuid4().hex[:8]
    with TemporaryDirectory() as tmp:
        work = Path(tmp)
        own = settings.model_copy(
            update={
                "home": work / "home",
                "app_id": f"bench-{tag}",
                "topic_behaviors": f"bench-behaviors-{tag}",
                "topic_signals": f"bench-signals-{tag}",
                "topic_replans": f"bench-replans-{tag}",
                "topic_dead_letters": f"bench-dead-letters-{tag}",
                "stats_interval_s": 0.5,
            }
        )
        if settings.kafka_bootstrap:
            return run(own, n, work)
        broker = stack.start_broker(work / "broker")
        try:
            return run(
                own.model_copy(update={"kafka_bootstrap": broker.address, "scan_end_offsets": True}), n, work
            )
        finally:
            stack.stop(broker)
