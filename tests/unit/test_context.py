"""The compressed per-user context: bounded, incremental, idempotent, time-ordered."""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from dataclasses import fields as dataclass_fields
from datetime import timedelta
from typing import Any

import numpy as np
import orjson

from intentstream.schemas.events import BehaviorEvent, EnvSignal
from intentstream.stream.context import (
    ContextShape,
    LastingKind,
    UserContext,
    apply_event,
    event_hash,
    interest_summaries,
    replan_request,
    signals_for,
)
from intentstream.stream.entities import EntityCache, embed
from tests.helpers import NOW, event_dict, signal_dict

SHAPE = ContextShape(recent=4, max_interests=3, seen_ids=32)


def event(n: int, **fields: Any) -> BehaviorEvent:
    return BehaviorEvent.model_validate(event_dict(n, **fields))


def apply(ctx: UserContext, e: BehaviorEvent, position: tuple[int, int] | None = None) -> bool:
    return apply_event(ctx, e, SHAPE, EntityCache(), position)


def test_event_updates_counts_version_and_recent() -> None:
    ctx = UserContext("u1")
    assert apply(ctx, event(1))
    assert apply(ctx, event(2, action="cart"))
    assert ctx.version == 2
    assert ctx.counts == {"view": 1, "cart": 1}
    assert [b["action"] for b in ctx.recent] == ["view", "cart"]
    assert ctx.newest_event_ts == event(2).ts.timestamp()
    assert ctx.first_event_ts == event(1).ts.timestamp()


def test_the_same_event_published_twice_is_counted_once() -> None:
    ctx = UserContext("u1")
    assert apply(ctx, event(1), (0, 10))
    before = ctx.to_bytes()
    assert not apply(ctx, event(1), (0, 11))  # same event id, a new offset: a replay
    assert ctx.version == 1
    assert ctx.to_bytes() != before  # only the watermark moved
    assert UserContext.from_bytes(ctx.to_bytes()).version == 1


def test_a_redelivered_message_is_skipped_by_its_offset() -> None:
    ctx = UserContext("u1")
    for n in range(40):  # more than the seen-set holds: the watermark still catches it
        apply(ctx, event(n), (0, n))
    assert not apply(ctx, event(0), (0, 0))
    assert ctx.version == 40
    assert apply(ctx, event(99), (1, 0))  # another partition has its own watermark


def test_event_hash_is_stable_across_processes() -> None:
    """A restarted worker must recognise the ids hashed before the restart."""
    code = "from stream.context import event_hash; print(event_hash('rees46-2'))"
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert runs == {str(event_hash("rees46-2"))}
    assert event_hash("a") != event_hash("b")


def test_older_behaviours_fold_into_bounded_interest_clusters() -> None:
    ctx = UserContext("u1")
    entities = EntityCache()
    kinds = [
        {"item_text": "samsung smartphone", "category": "electronics.smartphone", "brand": "samsung"},
        {"item_text": "bosch kettle", "category": "appliances.kitchen.kettle", "brand": "bosch"},
        {"item_text": "nike sneakers", "category": "apparel.shoes", "brand": "nike"},
        {"item_text": "lego bricks", "category": "kids.toys", "brand": "lego"},
        {"item_text": "sofa", "category": "furniture.living_room.sofa", "brand": "ikea"},
    ]
    for n in range(200):
        kind = kinds[n % len(kinds)]
        apply_event(ctx, event(n, item_id=f"i{n % 11}", **kind), SHAPE, entities)
    assert len(ctx.recent) == SHAPE.recent
    assert len(ctx.interests) <= SHAPE.max_interests
    folded = sum(sum(c.counts.values()) for c in ctx.interests)
    assert folded == 200 - SHAPE.recent  # nothing dropped: merged clusters keep their counts
    assert all(c.weight > 0 for c in ctx.interests)


def test_similar_items_share_a_cluster_and_keep_a_price_band() -> None:
    ctx = UserContext("u1")
    entities = EntityCache()
    for n in range(10):
        apply_event(ctx, event(n, item_id=f"phone{n}", price=100.0 + 10 * n), SHAPE, entities)
    assert len(ctx.interests) == 1
    cluster = ctx.interests[0]
    assert cluster.counts == {"view": 6}
    assert (cluster.price_low, cluster.price_high) == (100.0, 150.0)


def test_context_stays_under_8_kb_at_10k_events() -> None:
    ctx = UserContext("u1")
    entities = EntityCache()
    shape = ContextShape()  # the defaults
    # More kinds than the lasting profile keeps, some with long names.
    categories = itertools.cycle(
        ["a.b", "c.d.e", "f", "g.h", "i.j.k", "l", "m.n", "o.p", "q", "r.s"]
        + [f"x.kind_{n}_{'long_name_' * 20}" for n in range(20)]
    )
    for n in range(10_000):
        category = next(categories)
        apply_event(
            ctx,
            event(
                n, item_id=f"i{n % 997}", item_text=f"thing {n % 97}", category=category, brand=f"b{n % 13}"
            ),
            shape,
            entities,
            (0, n),
        )
    assert ctx.version == 10_000
    assert len(ctx.seen) == shape.seen_ids
    assert len(ctx.kinds) == shape.max_kinds
    assert len(ctx.to_bytes()) < 8 * 1024


def test_out_of_order_events_are_kept_in_time_order() -> None:
    ctx = UserContext("u1")
    apply(ctx, event(5))
    apply(ctx, event(2))
    assert [b["ts"] for b in ctx.recent] == sorted(b["ts"] for b in ctx.recent)
    assert ctx.newest_event_ts == event(5).ts.timestamp()
    assert ctx.first_event_ts == event(2).ts.timestamp()


def test_region_is_learned_from_events() -> None:
    ctx = UserContext("u1")
    apply(ctx, event(1, region="Lyon"))
    apply(ctx, event(2))
    assert ctx.region == "Lyon"


def test_bytes_round_trip() -> None:
    ctx = UserContext("u1")
    entities = EntityCache()
    for n in range(12):
        apply_event(ctx, event(n, region="Lyon"), SHAPE, entities, (0, n))
    again = UserContext.from_bytes(ctx.to_bytes())
    assert again.to_bytes() == ctx.to_bytes()
    assert again.seen == ctx.seen
    assert np.allclose(again.interest, ctx.interest, rtol=1e-2)
    # A restored context goes on exactly like the original.
    apply_event(ctx, event(50), SHAPE, entities, (0, 50))
    apply_event(again, event(50), SHAPE, entities, (0, 50))
    assert [c.counts for c in again.interests] == [c.counts for c in ctx.interests]


KETTLE = {
    "item_text": "bosch kettle",
    "category": "appliances.kitchen.kettle",
    "brand": "bosch",
    "item_id": "k1",
}


def test_embeddings_group_neighbouring_categories() -> None:
    phone = embed("samsung galaxy", "electronics.smartphone", "samsung")
    other_phone = embed("apple iphone", "electronics.smartphone", "apple")
    kettle = embed("bosch kettle", "appliances.kitchen.kettle", "bosch")
    assert float(phone @ other_phone) > float(phone @ kettle)
    assert embed("").any() == False  # noqa: E712 - no features, no direction


def test_signals_reach_only_their_region_and_expire() -> None:
    ctx = UserContext("u1", region="Lyon")
    here = EnvSignal.model_validate(signal_dict(1, region="Lyon"))
    everyone = EnvSignal.model_validate(signal_dict(2, region="*", kind="holiday", text="national holiday"))
    elsewhere = EnvSignal.model_validate(signal_dict(3, region="Oslo"))
    active = signals_for(ctx, [here, everyone, elsewhere], NOW)
    assert {s.text for s in active} == {"heavy rain all weekend", "national holiday"}
    assert signals_for(ctx, [here], NOW + timedelta(days=5)) == []  # expired
    assert signals_for(UserContext("u2"), [here], NOW) == []  # region unknown: only "*" signals


def test_replan_request_snapshots_the_compressed_context() -> None:
    ctx = UserContext("u1")
    entities = EntityCache()
    for n in range(10):
        apply_event(ctx, event(n), SHAPE, entities)
    request = replan_request(ctx, trigger="every_n_events", signals=[], now=NOW, shape=SHAPE)
    assert request.context_version == 10
    assert len(request.recent) == SHAPE.recent
    assert request.interests == interest_summaries(ctx)
    assert sum(sum(i.counts.values()) for i in request.interests) == 10 - SHAPE.recent
    assert request.newest_event_time == event(9).ts


def test_freshness_summarises_the_newest_window_and_the_whole_ring() -> None:
    from intentstream.stream.stats import Freshness

    fresh = Freshness(size=100, window_s=10.0)
    assert fresh.summaries(None, math.inf) == [{}, {}]
    for produced_s, latency_ms in ((0, 900.0), (1, 800.0), (30, 10.0), (35, 20.0)):
        fresh.add(produced_s * 1000.0, latency_ms)
    window, whole = fresh.summaries(None, math.inf)
    assert window["samples"] == 2  # produced within 10 s of the newest
    assert window["max"] == 20.0
    assert whole["samples"] == 4
    assert whole["max"] == 900.0
    assert fresh.percentiles() == window


def test_a_copy_has_every_field_and_shares_nothing_an_update_changes() -> None:
    ctx, entities = UserContext("u1"), EntityCache()
    for n in range(12):
        apply_event(ctx, event(n, brand=f"b{n % 3}"), SHAPE, entities, (0, n))
    ctx.signals_seen.append("s1")
    ctx.last_replan_at, ctx.planned = 5.0, ["a kettle"]
    copied = ctx.copy()
    for f in dataclass_fields(UserContext):
        if f.name in ("cluster_matrix", "derived"):  # caches, rebuilt on demand
            continue
        mine, theirs = getattr(copied, f.name), getattr(ctx, f.name)
        if isinstance(theirs, np.ndarray):
            assert np.array_equal(mine, theirs), f.name
        else:
            assert mine == theirs, f.name
    before = ctx.to_bytes()
    apply_event(copied, event(99, brand="other"), SHAPE, entities, (0, 99))
    assert ctx.to_bytes() == before


def test_the_lasting_profile_counts_every_kind_exactly_and_keeps_the_heaviest() -> None:
    shape = ContextShape(recent=2, max_kinds=2)
    ctx, entities = UserContext("u1"), EntityCache()
    kinds = [("appliances.kitchen.electric_kettle", "view")] * 3 + [("electronics.smartphone", "cart")] * 2
    for n, (category, action) in enumerate(kinds):
        apply_event(ctx, event(n, category=category, action=action), shape, entities)
    assert {k: v.counts for k, v in ctx.kinds.items()} == {
        "electric kettle": {"view": 3},
        "smartphone": {"cart": 2},
    }
    first = event(0).ts.timestamp()
    assert ctx.kinds["electric kettle"].first_ts == first
    assert math.isclose(ctx.kinds["smartphone"].weight, 2 * 3.0, rel_tol=1e-3)  # two carts, seconds apart
    # A third kind replaces the lightest now (three views weigh less than two carts) and counts
    # from then on: nothing is estimated.
    apply_event(ctx, event(9, category="garden.hose"), shape, entities)
    assert set(ctx.kinds) == {"smartphone", "hose"}
    assert ctx.kinds["hose"].counts == {"view": 1}
    # A profile of no kinds (max_kinds=0) stays empty.
    empty = UserContext("u2")
    apply_event(empty, event(1), ContextShape(max_kinds=0), entities)
    assert empty.kinds == {}


def test_the_lasting_profile_survives_bytes_and_a_context_from_before_it_loads_empty() -> None:
    ctx = UserContext("u1")
    apply(ctx, event(1, category="appliances.kitchen.kettle"))
    again = UserContext.from_bytes(ctx.to_bytes())
    assert (
        again.kinds
        == ctx.kinds
        == {"kettle": LastingKind({"view": 1}, 1.0, event(1).ts.timestamp(), event(1).ts.timestamp())}
    )
    old = orjson.loads(ctx.to_bytes())
    del old["kinds"]
    assert UserContext.from_bytes(orjson.dumps(old)).kinds == {}
