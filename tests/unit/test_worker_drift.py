"""The worker's drift test through the entity pool, on the worker's own batch path
(``stream.batch.BatchPath.apply``) without Kafka: the batch's entities grow the pool, drift
is measured for all of a batch's users at once, and a context restored after a restart
reseeds the pool instead of drifting for want of history."""

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
from intentstream.stream.trigger import DRIFT, Decision, mark_replanned
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


def test_a_batch_grows_the_pool_and_a_theme_switch_replans_as_drift(tmp_path: Path) -> None:
    bp = path(tmp_path)
    ctx = UserContext("u1")
    batch(bp, ctx, messages(0, 4), at(0))
    assert bp.scorer.pool.lengths["u1"] == 4
    mark_replanned(ctx, at(0).timestamp())
    assert batch(bp, ctx, messages(10, 2), at(100)) == set()  # more phones: no drift
    outcome = bp.apply({0: {"u1": ctx}}, messages(20, 8, **KETTLE), at(200))
    assert {u: d.reason for u, d in outcome.decisions.items()} == {"u1": "drift"}  # ahead of every_n
    assert outcome.drifts_measured == 1


def test_a_restored_context_reseeds_the_pool_instead_of_drifting(tmp_path: Path) -> None:
    before = path(tmp_path)
    ctx = UserContext("u1")
    batch(before, ctx, messages(0, 12), at(0))
    mark_replanned(ctx, at(0).timestamp())
    restored = UserContext.from_bytes(ctx.to_bytes())  # from the changelog, after a restart
    after = path(tmp_path)
    assert not after.scorer.knows("u1")
    assert batch(after, restored, messages(40, 2), at(100)) == set()  # phones still: no drift
    assert after.scorer.pool.lengths["u1"] == len(restored.interests) + len(restored.recent)
    # A redelivered batch (only events already applied) changes nothing, pool included.
    redelivered = UserContext.from_bytes(restored.to_bytes())
    again = path(tmp_path)
    assert batch(again, redelivered, messages(40, 2), at(100)) == set()
    assert not again.scorer.knows("u1")
    # A restored user the sweep measures before any new event is seeded as well.
    swept = UserContext.from_bytes(restored.to_bytes())
    fresh = path(tmp_path)
    assert fresh.policy.wants_drift(swept, at(200).timestamp())
    assert fresh.decide([swept], at(200).timestamp()) == (1, {})
    assert fresh.scorer.knows("u1")


def test_the_stats_of_a_worker_that_requested_replans_are_written_as_json(tmp_path: Path) -> None:
    # Trigger counts keyed by the enum once made the stats report raise and stop the worker.
    service = ContextService(Settings(home=tmp_path), "127.0.0.1:9", scan_end_offsets=False)  # never connects
    ctx = UserContext("u1")
    service.path.apply({0: {"u1": ctx}}, messages(0, 1, action="cart"), at(0))
    service._request(ctx, Decision(Trigger.DRIFT, DRIFT))
    stats = orjson.loads(orjson.dumps(service.stats()))
    assert stats["counters"]["triggers"] == {"drift": 1}
    assert stats["replan_queue"]["pending"] == 1
