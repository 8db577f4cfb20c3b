"""The worker's drift test through the entity pool (stream/ingest.py), without Kafka: the
batch's entities grow the pool, drift is measured for all of a batch's users at once, and a
context restored after a restart reseeds the pool instead of drifting for want of history."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from intentstream.settings import Settings
from schemas.events import BehaviorEvent
from stream.context import UserContext, apply_event
from stream.ingest import ContextService
from stream.trigger import mark_replanned
from tests.helpers import event_dict

KETTLE = {
    "item_text": "bosch kettle",
    "category": "appliances.kitchen.kettle",
    "brand": "bosch",
    "item_id": "k",
}


def service(home: Path) -> ContextService:
    return ContextService(Settings(home=home), "127.0.0.1:9", scan_end_offsets=False)  # never connects


def batch(svc: ContextService, ctx: UserContext, events: list[BehaviorEvent], now_s: float) -> set[str]:
    """What ``apply_batch`` does with one user's events, after decoding them."""
    before = {ctx.user_id: ctx.version}
    grown: dict[str, list[np.ndarray]] = {ctx.user_id: []}
    dirty = {}
    for e in events:
        if apply_event(ctx, e, svc.shape, svc.entities, sequence=grown[ctx.user_id]):
            dirty[ctx.user_id] = (0, ctx)
    svc._grow_pool(grown, before, dirty)
    return svc._decide([c for _, c in dirty.values()], now_s)


def events(first: int, n: int, **fields: str) -> list[BehaviorEvent]:
    return [BehaviorEvent.model_validate(event_dict(i, **fields)) for i in range(first, first + n)]


def test_a_batch_grows_the_pool_and_a_theme_switch_replans_as_drift(tmp_path: Path) -> None:
    svc = service(tmp_path)
    ctx = UserContext("u1")
    batch(svc, ctx, events(0, 4), 1000.0)
    assert svc.scorer.pool.lengths["u1"] == 4
    mark_replanned(ctx, 1000.0)
    assert batch(svc, ctx, events(10, 2), 1100.0) == set()  # more phones: no drift
    assert batch(svc, ctx, events(20, 8, **KETTLE), 1200.0) == {"u1"}
    assert svc.counters.triggers == {"drift": 1}  # ahead of every_n_events, which also holds


def test_a_restored_context_reseeds_the_pool_instead_of_drifting(tmp_path: Path) -> None:
    before = service(tmp_path)
    ctx = UserContext("u1")
    batch(before, ctx, events(0, 12), 1000.0)
    mark_replanned(ctx, 1000.0)
    restored = UserContext.from_bytes(ctx.to_bytes())  # from the changelog, after a restart
    after = service(tmp_path)
    assert not after.scorer.knows("u1")
    assert batch(after, restored, events(40, 2), 1100.0) == set()  # phones still: no drift
    assert after.scorer.pool.lengths["u1"] == len(restored.interests) + len(restored.recent)
    # A redelivered batch (only events already applied) changes nothing, pool included.
    redelivered = UserContext.from_bytes(restored.to_bytes())
    again = service(tmp_path)
    assert batch(again, redelivered, events(40, 2), 1100.0) == set()
    assert not again.scorer.knows("u1")
    # A restored user the sweep measures before any new event is seeded as well.
    swept = UserContext.from_bytes(restored.to_bytes())
    fresh = service(tmp_path)
    assert fresh.policy.wants_drift(swept, 1200.0)
    assert fresh._decide([swept], 1200.0) == set()
    assert fresh.scorer.knows("u1")
