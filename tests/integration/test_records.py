"""The two writers of a record on a real redis-server: the stream's live writes and the
planner's landing plans, each a compare-and-set through the store's write script, never
undoing each other."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from intentstream.schemas.events import BehaviorEvent
from intentstream.schemas.record import LLMPlan, PlannedTag
from intentstream.store import IntentStore
from intentstream.stream.context import ContextShape, UserContext, apply_event
from intentstream.stream.entities import EntityCache
from intentstream.stream.records import RecordWriter
from tests.helpers import NOW, event_dict

pytestmark = pytest.mark.integration

SHAPE = ContextShape()
KETTLE = {"item_text": "bosch kettle", "category": "appliances.kitchen.kettle", "brand": "bosch"}


def writer(client: aioredis.Redis) -> RecordWriter:
    return RecordWriter(IntentStore(client), SHAPE, live_tags=3)


def feed(ctx: UserContext, *events: dict) -> UserContext:  # type: ignore[type-arg]
    entities = EntityCache()
    for e in events:
        apply_event(ctx, BehaviorEvent.model_validate({**e, "user_id": ctx.user_id}), SHAPE, entities)
    return ctx


def plan_for(user: str, version: int, tag: str = "samsung phones") -> LLMPlan:
    return LLMPlan(
        user_id=user,
        context_version=version,
        trigger="first_plan",
        event_time=NOW - timedelta(minutes=50),
        planned_at=NOW,
        model="qwen",
        verdict="good",
        tags=[
            PlannedTag(
                tag=tag, explanation="You keep looking at them.", cites=["samsung electronics smartphone"]
            )
        ],
    )


async def test_a_live_write_follows_the_context_once_per_change(redis_client: aioredis.Redis) -> None:
    records = writer(redis_client)
    ctx = feed(UserContext("u1"), *(event_dict(n) for n in range(3)))
    assert (await records.write_live([ctx], NOW)).written == 1
    got = await records.store.get("u1")
    assert got is not None
    assert (got.version, got.context_version, got.trigger, got.model) == (1, 3, "live", "none")
    assert [(t.tag, t.source) for t in got.tags] == [("samsung smartphone", "live")]
    again = await records.write_live([ctx], NOW)  # a batch delivered again: nothing newer
    assert (again.written, again.unchanged) == (0, 1)
    feed(ctx, *(event_dict(10 + n, **KETTLE) for n in range(2)))
    assert (await records.write_live([ctx], NOW)).written == 1
    got = await records.store.get("u1")
    assert got is not None
    assert (got.version, got.context_version) == (2, 5)
    assert {t.tag for t in got.tags} == {"samsung smartphone", "bosch kettle"}


async def test_a_landing_plan_is_merged_and_the_next_live_write_re_ranks_it(
    redis_client: aioredis.Redis,
) -> None:
    records = writer(redis_client)
    ctx = feed(
        UserContext("u1"),
        *(event_dict(n) for n in range(3)),
        *(event_dict(10 + n, **KETTLE) for n in range(2)),
    )
    await records.write_live([ctx], NOW)
    landed = await records.land_plan(plan_for("u1", 3), NOW)
    assert landed is not None
    assert [(t.tag, t.source) for t in landed.tags] == [("samsung phones", "llm"), ("bosch kettle", "live")]
    assert (landed.version, landed.context_version, landed.llm_context_version) == (2, 5, 3)
    assert await records.land_plan(plan_for("u1", 3, "older news"), NOW) is None  # not newer
    [stored] = await records.store.states(["u1"])
    assert stored.plan == plan_for("u1", 3)
    feed(ctx, *(event_dict(20 + n, **KETTLE) for n in range(6)))  # kettles take over
    await records.write_live([ctx], NOW)
    got = await records.store.get("u1")
    assert got is not None
    assert got.version == 3
    assert [(t.tag, t.source) for t in got.tags] == [("bosch kettle", "live"), ("samsung phones", "llm")]
    assert got.llm_context_version == 3


async def test_the_two_writers_racing_never_lose_the_plan_or_the_newest_context(
    redis_client: aioredis.Redis,
) -> None:
    records = writer(redis_client)
    users = [f"r{i}" for i in range(30)]
    ctxs = {u: feed(UserContext(u), *(event_dict(n) for n in range(3))) for u in users}
    await records.write_live(list(ctxs.values()), NOW)
    for ctx in ctxs.values():
        feed(ctx, *(event_dict(10 + n, **KETTLE) for n in range(3)))
    await asyncio.gather(
        *(records.land_plan(plan_for(u, 3), NOW) for u in users),
        *(records.write_live([ctxs[u]], NOW) for u in users),
    )
    for u in users:
        got = await records.store.get(u)
        assert got is not None
        assert got.context_version == 6, u  # the newest context ...
        assert got.llm_context_version == 3, u  # ... and the plan, whichever wrote last
        assert ("samsung phones", "llm") in [(t.tag, t.source) for t in got.tags], u


async def test_a_stored_plan_or_record_that_does_not_parse_is_replaced(redis_client: aioredis.Redis) -> None:
    records = writer(redis_client)
    key = records.store.key("u1")
    await redis_client.hset(key, mapping={"version": "4", "plan": b"{not json", "record": b"\xff\xfe"})
    ctx = feed(UserContext("u1"), *(event_dict(n) for n in range(3)))
    assert (await records.write_live([ctx], NOW)).written == 1  # the bad plan counts as none
    got = await records.store.get("u1")
    assert got is not None
    assert (got.version, got.model) == (5, "none")
    await redis_client.hset(key, "record", b"[]")
    landed = await records.land_plan(plan_for("u1", 3), NOW)
    assert landed is not None
    assert [t.source for t in landed.tags] == ["llm"]  # nothing of the corrupt record kept
