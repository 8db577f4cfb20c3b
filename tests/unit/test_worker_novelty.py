"""What is new, decided on the worker's own batch path (``stream.batch.BatchPath.apply``)
without Kafka: once per user per batch, against what the last request asked about, which a
context restored after a restart remembers."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from intentstream.schemas.record import Trigger
from intentstream.settings import Settings
from intentstream.stream.batch import BatchPath, Message
from intentstream.stream.context import UserContext
from intentstream.stream.ingest import ContextService
from intentstream.stream.trigger import NOVELTY, Decision, mark_replanned
from tests.helpers import NOW, message_of

KETTLE = {
    "item_text": "bosch kettle",
    "category": "appliances.kitchen.kettle",
    "brand": "bosch",
    "item_id": "k",
}


def path(home: Path) -> BatchPath:
    return BatchPath.from_settings(Settings(home=home))


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def messages(first: int, n: int, **fields: Any) -> list[Message]:
    return [message_of(i, offset=i, **fields) for i in range(first, first + n)]


def batch(bp: BatchPath, ctx: UserContext, sent: list[Message], now: datetime) -> set[str]:
    """One batch of one user's messages through the worker's batch path."""
    outcome = bp.apply({0: {ctx.user_id: ctx}}, sent, now)
    assert not outcome.dead
    return set(outcome.decisions)


def test_a_batch_asks_the_llm_only_about_what_is_new(tmp_path: Path) -> None:
    bp = path(tmp_path)
    ctx = UserContext("u1")
    assert bp.apply({0: {"u1": ctx}}, messages(0, 8), at(0)).decisions == {}  # 8 views: code's entries say it
    first = bp.apply({0: {"u1": ctx}}, messages(8, 6), at(0))
    assert {u: d.reason for u, d in first.decisions.items()} == {"u1": "first_plan"}  # a dozen: worth the LLM
    mark_replanned(ctx, at(0).timestamp(), bp.shape)
    assert batch(bp, ctx, messages(10, 20), at(100)) == set()  # more phones: nothing new
    outcome = bp.apply({0: {"u1": ctx}}, messages(40, 8, **KETTLE), at(200))
    assert {u: d.reason for u, d in outcome.decisions.items()} == {"u1": "novelty"}


def test_a_restored_context_remembers_what_was_asked(tmp_path: Path) -> None:
    before = path(tmp_path)
    ctx = UserContext("u1")
    batch(before, ctx, messages(0, 12), at(0))
    mark_replanned(ctx, at(0).timestamp(), before.shape)
    restored = UserContext.from_bytes(ctx.to_bytes())  # from the changelog, after a restart
    after = path(tmp_path)
    assert batch(after, restored, messages(40, 8), at(100)) == set()  # phones still: nothing new
    # A redelivered batch (only events already applied) changes and decides nothing.
    redelivered = UserContext.from_bytes(restored.to_bytes())
    outcome = path(tmp_path).apply({0: {"u1": redelivered}}, messages(40, 8), at(100))
    assert (outcome.applied, outcome.duplicates, outcome.decisions) == (0, 8, {})


def test_a_context_written_before_planned_existed_restores(tmp_path: Path) -> None:
    ctx = UserContext("u1")
    batch(path(tmp_path), ctx, messages(0, 3), at(0))
    old = orjson.loads(ctx.to_bytes())
    del old["planned"]
    old["plan_interest"] = old["interest"]  # what the changelog held before
    restored = UserContext.from_bytes(orjson.dumps(old))
    assert restored.planned == []
    assert restored.version == ctx.version


def test_the_stats_of_a_worker_that_requested_replans_are_written_as_json(tmp_path: Path) -> None:
    # Trigger counts keyed by the enum once made the stats report raise and stop the worker.
    service = ContextService(Settings(home=tmp_path), "127.0.0.1:9", scan_end_offsets=False)  # never connects
    ctx = UserContext("u1")
    service.path.apply({0: {"u1": ctx}}, messages(0, 1, action="cart"), at(0))
    service._request(ctx, Decision(Trigger.NOVELTY, NOVELTY))
    stats = orjson.loads(orjson.dumps(service.stats()))
    assert stats["counters"]["triggers"] == {"novelty": 1}
    assert stats["replan_queue"]["pending"] == 1
