"""Builders and readers shared by the tests."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient

from intentstream.schemas.record import IntentRecord, IntentTag
from intentstream.settings import Settings
from intentstream.stream.batch import Message, shape_of
from intentstream.stream.context import UserContext, apply_event
from intentstream.stream.entities import EntityCache, Vector

# The checkout the tests run in (the package itself never assumes one).
REPO_ROOT = Path(__file__).resolve().parent.parent

# Real wall-clock time: workers compare event times with their own clock.
NOW = datetime.now(UTC).replace(microsecond=0)


def isolated_settings(home: Path, kafka_bootstrap: str, **more: Any) -> Settings:
    """Settings for one test: its own app id, topics and Redis keys on shared services (the
    test broker is Tansu: end offsets are scanned)."""
    tag = uuid.uuid4().hex[:8]
    fields: dict[str, Any] = {
        "home": home,
        "kafka_bootstrap": kafka_bootstrap,
        "app_id": f"test-{tag}",
        "topic_behaviors": f"behaviors-{tag}",
        "topic_signals": f"signals-{tag}",
        "topic_replans": f"replans-{tag}",
        "topic_dead_letters": f"dead-letters-{tag}",
        "redis_key_prefix": f"intent-{tag}",
        "changes_stream": f"intent-{tag}:changes",
        "topic_partitions": 2,
        "scan_end_offsets": True,
        # A test sends a handful of events per user: their first plan comes at the novelty
        # weight (the first-plan weight is tested on its own, in test_trigger).
        "replan_first_min_weight": 4.5,
    }
    return Settings(**{**fields, **more})


def event_dict(n: int = 1, *, user: str = "u1", action: str = "view", **fields: Any) -> dict[str, Any]:
    """A valid behaviour event as a producer would send it."""
    base: dict[str, Any] = {
        "event_id": f"e{n}",
        "user_id": user,
        "action": action,
        "ts": (NOW - timedelta(minutes=60) + timedelta(seconds=n)).isoformat(),
        "item_id": f"item{n % 7}",
        "item_text": f"samsung electronics smartphone model {n % 7}",
        "category": "electronics.smartphone",
        "brand": "samsung",
        "price": 199.0 + n,
    }
    if action == "search":
        base.pop("item_id")
        base["query"] = "android phone"
    base.update(fields)
    return base


class FailingEntitiesDouble(EntityCache):
    """Test double: an entity cache that raises for one text, as a bug on an odd value would."""

    def __init__(self, poison: str) -> None:
        super().__init__()
        self.poison = poison

    def get(self, key: str, text: str, category: str | None = None, brand: str | None = None) -> Vector:
        if self.poison in text:
            raise ZeroDivisionError(f"cannot embed {text!r}")
        return super().get(key, text, category, brand)


def message_of(
    n: int = 1, *, offset: int | None = None, partition: int = 0, key: bytes | None = None, **fields: Any
) -> Message:
    """``event_dict(n, **fields)`` as the broker delivers it to the worker's batch path."""
    event = event_dict(n, **fields)
    return Message(
        "behaviors",
        partition,
        n if offset is None else offset,
        event["user_id"].encode() if key is None else key,
        orjson.dumps(event),
        NOW.timestamp() * 1000,
    )


def signal_dict(n: int = 1, *, region: str = "Lyon", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "signal_id": f"s{n}",
        "kind": "weather",
        "text": "heavy rain all weekend",
        "region": region,
        "valid_from": (NOW - timedelta(hours=1)).isoformat(),
        "valid_until": (NOW + timedelta(hours=48)).isoformat(),
        "ts": (NOW - timedelta(hours=1)).isoformat(),
    }
    base.update(fields)
    return base


def intent_record(version: int, user: str = "u1") -> IntentRecord:
    """A valid intent record whose first (LLM) tag names its version, with a live entry and
    co-viewed items."""
    return IntentRecord(
        user_id=user,
        version=version,
        context_version=version,
        trigger="live",
        tags=[
            IntentTag(tag=f"tag v{version}", explanation=f"From context version {version}."),
            IntentTag(
                tag="live entry",
                explanation="Viewed twice.",
                source="live",
                last_seen=NOW,
                wording="code",
                items=["i7", "i3"],
            ),
        ],
        event_time=NOW,
        planned_at=NOW,
        model="m",
        llm_context_version=version,
        co_viewed=["i9", "i4"],
        category_popular=["i5"],
    )


async def consume(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    timeout_s: float = 60.0,
    client_options: dict[str, Any] | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning until ``until(records)`` holds or the timeout passes.
    Waits for the topic to exist first: subscribing to a missing topic would make the broker
    auto-create it with its default partition count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_options or {}))
    await admin.start()
    try:
        await eventually(lambda: _has_topic(admin, topic), timeout_s=timeout_s)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **(client_options or {}),
    )
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(records) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def _has_topic(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic in await admin.list_topics()


async def eventually(check: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.5) -> Any:
    """Await ``check()`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(every_s)


def expected_contexts(settings: Settings, events: list) -> dict[str, UserContext]:  # type: ignore[type-arg]
    """The uninterrupted run: every event folded once, in order."""
    contexts: dict[str, UserContext] = {}
    shape, entities = shape_of(settings), EntityCache()
    for event in events:
        ctx = contexts.setdefault(event.user_id, UserContext(event.user_id))
        apply_event(ctx, event, shape, entities)
    return contexts


def latest_contexts(records: list) -> dict[str, UserContext]:  # type: ignore[type-arg]
    found: dict[str, UserContext] = {}
    for r in records:
        if r.value is not None:
            ctx = UserContext.from_bytes(r.value)
            found[ctx.user_id] = ctx
    return found


def essence(ctx: UserContext) -> tuple[object, ...]:
    """What must not differ: versions, counts, the recent window (without the item ids'
    internal keys), the interest clusters and the duplicate-detection state."""
    interests = [(c.text, c.counts, round(c.weight, 3), c.price_low, c.price_high) for c in ctx.interests]
    return ctx.version, ctx.counts, ctx.recent, interests, ctx.seen
