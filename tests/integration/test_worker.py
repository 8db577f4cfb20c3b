"""A real worker process on the real broker: contexts, replan requests, dead letters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from subprocess import Popen

import orjson
import pytest

from intentstream.deploy.stack import resolve_endpoints
from intentstream.perf.demo import start_worker, stop_worker
from intentstream.producer import IntentProducer
from intentstream.reader import IntentReader
from intentstream.schemas.record import IntentRecord
from intentstream.settings import Settings
from intentstream.store import IntentStore, connect
from intentstream.stream.context import UserContext
from intentstream.stream.ingest import ContextService
from intentstream.stream.topics import ensure_topics
from tests.helpers import NOW, FailingEntitiesDouble, consume, event_dict, eventually, latest_contexts

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def ingest_worker(app_settings: Settings, tmp_path: Path) -> Iterator[Popen[bytes]]:
    """A worker without the planner: ingestion, contexts and replan requests only."""
    log = tmp_path / "worker.log"
    proc = start_worker(app_settings, resolve_endpoints(app_settings), log, planner=False)
    yield proc
    stop_worker(proc)
    print(log.read_text()[-3000:])  # shown by pytest when a test fails


def latest_context(records: list, user: str) -> UserContext | None:  # type: ignore[type-arg]
    found = None
    for r in records:
        if r.value is not None and (ctx := UserContext.from_bytes(r.value)).user_id == user:
            found = ctx
    return found


async def test_bad_messages_are_dead_lettered_and_good_ones_still_flow(
    app_settings: Settings, ingest_worker: Popen[bytes]
) -> None:
    future = (NOW + timedelta(days=400)).isoformat()
    bad = {
        "malformed_json": (b'{"event_id": "x", ', b"u1"),
        "not_an_object": (b"[1,2,3]", b"u1"),
        "invalid_fields": (orjson.dumps({**event_dict(50), "price": "free"}), b"u1"),
        "unknown_action": (orjson.dumps(event_dict(51, action="teleport")), b"u1"),
        "oversized": (orjson.dumps({**event_dict(52), "pad": "z" * 40_000}), b"u1"),
        "future_timestamp": (orjson.dumps(event_dict(53, ts=future)), b"u1"),
        "key_mismatch": (orjson.dumps(event_dict(54, user="alice")), b"mallory"),
        "unsupported_schema_version": (orjson.dumps({**event_dict(55), "schema_version": 99}), b"u1"),
    }
    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    async with IntentProducer(bootstrap, app_settings) as producer:
        for value, key in bad.values():
            await producer.send_raw(app_settings.topic_behaviors, value, key)
        await producer.send_events([event_dict(n, user="u1", action="cart") for n in (1, 2)])

    letters = await consume(bootstrap, app_settings.topic_dead_letters, until=lambda r: len(r) >= len(bad))
    by_reason = {dict(r.headers)["reason"].decode(): r for r in letters}
    assert set(by_reason) == set(bad)
    for reason, (value, key) in bad.items():
        letter = by_reason[reason]
        assert letter.value == value, reason  # the original bytes, untouched
        assert letter.key == key
        assert dict(letter.headers)["source"].startswith(app_settings.topic_behaviors.encode())

    replans = await consume(bootstrap, app_settings.topic_replans, until=lambda r: len(r) >= 1)
    request = orjson.loads(replans[0].value)
    assert request["user_id"] == "u1"
    assert request["trigger"] == "first_plan"  # two carts: an interest worth the LLM
    assert request["context_version"] == 2  # none of the bad messages touched the context
    assert ingest_worker.poll() is None


async def test_redelivered_events_are_applied_once(
    app_settings: Settings, ingest_worker: Popen[bytes]
) -> None:
    events = [event_dict(n, user="dup") for n in range(1, 8)]
    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    async with IntentProducer(bootstrap, app_settings) as producer:
        await producer.send_events(events)
        await producer.send_events(events)  # a replay of the same log
        await producer.send_events([event_dict(100, user="dup", action="purchase")])

    changelog = f"{app_settings.app_id}-contexts-changelog"

    def done(records: list) -> bool:  # type: ignore[type-arg]
        ctx = latest_context(records, "dup")
        return ctx is not None and ctx.counts.get("purchase", 0) == 1

    ctx = latest_context(await consume(bootstrap, changelog, until=done), "dup")
    assert ctx is not None
    assert ctx.version == 8
    assert ctx.counts == {"view": 7, "purchase": 1}


async def test_signals_reach_the_users_of_their_region(
    app_settings: Settings, ingest_worker: Popen[bytes]
) -> None:
    from tests.helpers import signal_dict

    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    # In force is judged in event time: around the events' time (an hour before NOW), not the
    # time this test happens to run at.
    window = {
        "valid_from": (NOW - timedelta(hours=2)).isoformat(),
        "valid_until": (NOW + timedelta(days=1)).isoformat(),
        "ts": (NOW - timedelta(minutes=1)).isoformat(),
    }
    async with IntentProducer(bootstrap, app_settings) as producer:
        await producer.send_signal(signal_dict(1, region="Lyon", **window))
        await producer.send_signal(signal_dict(2, region="Oslo", text="snow storm", **window))
    await consume(bootstrap, f"{app_settings.app_id}-signals-changelog", until=lambda r: len(r) >= 2)
    async with IntentProducer(bootstrap, app_settings) as producer:
        await producer.send_events(
            [event_dict(n, user="lyon-user", action="cart", region="Lyon") for n in (1, 2)]
        )

    def carried(records: list) -> bool:  # type: ignore[type-arg]
        return any(orjson.loads(r.value)["signals"] for r in records)

    # The context service reads the signals' changelog on its own: the user's first request
    # carries the signal if it was there by then, else a re-plan for it follows the cooldown.
    replans = await consume(bootstrap, app_settings.topic_replans, until=carried, timeout_s=60)
    requests = [orjson.loads(r.value) for r in replans]
    assert {r["user_id"] for r in requests} == {"lyon-user"}
    assert [s["text"] for s in requests[-1]["signals"]] == ["heavy rain all weekend"]
    assert all(s["text"] != "snow storm" for r in requests for s in r["signals"])  # Oslo's, not theirs


async def test_a_signal_replans_the_users_it_concerns_within_the_budget(
    app_settings: Settings, tmp_path: Path
) -> None:
    from tests.helpers import signal_dict

    settings = app_settings.model_copy(update={"replan_budget_per_s": 2.0, "replan_budget_burst": 2.0})
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    lyon = [f"lyon{i}" for i in range(8)]
    oslo = [f"oslo{i}" for i in range(4)]
    worker = start_worker(settings, resolve_endpoints(settings), tmp_path / "worker.log", planner=False)
    try:
        async with IntentProducer(bootstrap, settings) as producer:
            await producer.send_events(
                [event_dict(1, user=u, region="Lyon") for u in lyon]
                + [event_dict(1, user=u, region="Oslo") for u in oslo]
            )
        await consume(
            bootstrap,
            f"{settings.app_id}-contexts-changelog",
            until=lambda r: len({c.user_id for c in latest_contexts(r).values()}) == 12,
        )
        now = NOW.now(NOW.tzinfo)
        async with IntentProducer(bootstrap, settings) as producer:
            await producer.send_signal(  # expired already: concerns nobody any more
                signal_dict(
                    7,
                    region="Lyon",
                    valid_from=(now - timedelta(days=2)).isoformat(),
                    valid_until=(now - timedelta(days=1)).isoformat(),
                    ts=(now - timedelta(days=2)).isoformat(),
                )
            )
            await producer.send_signal(signal_dict(8, region="Atlantis"))  # no user lives there
            await producer.send_signal(signal_dict(9, region="Lyon"))
        replans = await consume(bootstrap, settings.topic_replans, until=lambda r: len(r) >= len(lyon))
        # Nothing more comes: not for Oslo, not for the expired or the unknown region.
        more = await consume(bootstrap, settings.topic_replans, until=lambda r: False, timeout_s=4)
    finally:
        stop_worker(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])
    requests = [orjson.loads(r.value) for r in more]
    assert sorted(r["user_id"] for r in requests) == sorted(lyon)
    assert {r["trigger"] for r in requests} == {"signal:weather"}
    assert all([s["text"] for s in r["signals"]] == ["heavy rain all weekend"] for r in requests)
    # The budget (2/s, bursts of 2) spreads 8 re-plans over at least 3 seconds.
    stamps = sorted(r.timestamp for r in replans)
    assert (stamps[-1] - stamps[0]) / 1000 >= 2.5


async def test_a_signal_that_comes_into_force_later_replans_its_users_then(
    app_settings: Settings, tmp_path: Path
) -> None:
    """In force is judged by the stream clock: the newest event's time, moved on by the time
    since (the events here are an hour old; the signal starts 8 s after the newest)."""
    from tests.helpers import signal_dict

    settings = app_settings.model_copy(update={"replan_sweep_interval_s": 1.0})
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    worker = start_worker(settings, resolve_endpoints(settings), tmp_path / "worker.log", planner=False)
    events = [event_dict(1, user=f"oslo{i}", region="Oslo") for i in range(3)]
    try:
        sent_at = time.time()
        async with IntentProducer(bootstrap, settings) as producer:
            await producer.send_events(events)
        await consume(
            bootstrap,
            f"{settings.app_id}-contexts-changelog",
            until=lambda r: len(latest_contexts(r)) == 3,
        )
        newest = datetime.fromisoformat(events[-1]["ts"])
        async with IntentProducer(bootstrap, settings) as producer:
            await producer.send_signal(
                signal_dict(
                    5,
                    region="Oslo",
                    text="snow storm",
                    valid_from=(newest + timedelta(seconds=8)).isoformat(),
                    valid_until=(newest + timedelta(hours=3)).isoformat(),
                )
            )
        replans = await consume(bootstrap, settings.topic_replans, until=lambda r: len(r) >= 3, timeout_s=60)
    finally:
        stop_worker(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])
    assert all(r.timestamp / 1000 >= sent_at + 7.5 for r in replans)  # not before it is in force
    requests = [orjson.loads(r.value) for r in replans]
    assert {r["trigger"] for r in requests} == {"signal:weather"}
    assert all([s["text"] for s in r["signals"]] == ["snow storm"] for r in requests)


async def test_a_signal_that_arrives_during_a_users_cooldown_replans_them_after_it(
    app_settings: Settings, tmp_path: Path
) -> None:
    """Users whose first plan just left (within the cooldown) when a signal comes: the request
    that left could not carry it, so they are re-planned for it once the cooldown ends."""
    from tests.helpers import signal_dict

    settings = app_settings.model_copy(update={"replan_cooldown_s": 4.0, "replan_sweep_interval_s": 1.0})
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    users = [f"oslo{i}" for i in range(3)]
    worker = start_worker(settings, resolve_endpoints(settings), tmp_path / "worker.log", planner=False)
    try:
        async with IntentProducer(bootstrap, settings) as producer:
            await producer.send_events([event_dict(n, user=u, action="cart", region="Oslo")
                                        for u in users for n in (1, 2)])  # fmt: skip
            first = await consume(bootstrap, settings.topic_replans, until=lambda r: len(r) >= len(users))
            await producer.send_signal(signal_dict(6, region="Oslo", text="snow storm"))
        replans = await consume(
            bootstrap, settings.topic_replans, until=lambda r: len(r) >= 2 * len(users), timeout_s=60
        )
    finally:
        stop_worker(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])
    assert all(orjson.loads(r.value)["signals"] == [] for r in first)
    later = [orjson.loads(r.value) for r in replans[len(users) :]]
    assert sorted(r["user_id"] for r in later) == users  # each once
    assert all([s["text"] for s in r["signals"]] == ["snow storm"] for r in later)
    assert min(r.timestamp for r in replans[len(users) :]) - max(r.timestamp for r in first) >= 3000


async def test_a_replayed_log_meets_its_signals_in_its_own_time(
    app_settings: Settings, ingest_worker: Popen[bytes]
) -> None:
    """A log from December 2010 and that December's Christmas lead-up: in force for the
    replay (by event time), though long over by the wall clock; the signal of another
    region's holiday, and one over before the log's time, re-plan nobody."""
    from tests.helpers import signal_dict

    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    lead_up = signal_dict(
        1,
        region="United Kingdom",
        kind="holiday_leadup",
        text="lead-up to Christmas Day on 25 December (United Kingdom)",
        valid_from="2010-12-04T00:00:00+00:00",
        valid_until="2010-12-25T00:00:00+00:00",
    )
    elsewhere = {**lead_up, "signal_id": "s2", "region": "Norway", "text": "lead-up to Christmas (Norway)"}
    over = {**lead_up, "signal_id": "s3", "valid_from": "2010-11-01T00:00:00+00:00",
            "valid_until": "2010-11-02T00:00:00+00:00", "text": "Guy Fawkes"}  # fmt: skip
    async with IntentProducer(bootstrap, app_settings) as producer:
        for signal in (lead_up, elsewhere, over):
            await producer.send_signal(signal)
        await producer.send_events(
            [
                event_dict(
                    n,
                    user="london",
                    action="cart",
                    region="United Kingdom",
                    ts=f"2010-12-10T09:0{n}:00+00:00",
                )
                for n in (1, 2)
            ]
        )
    replans = await consume(bootstrap, app_settings.topic_replans, until=lambda r: len(r) >= 1)
    more = await consume(bootstrap, app_settings.topic_replans, until=lambda r: False, timeout_s=4)
    requests = [orjson.loads(r.value) for r in more]
    assert {r["user_id"] for r in requests} == {"london"}
    assert all([s["text"] for s in r["signals"]] == [lead_up["text"]] for r in requests)
    assert len(replans) >= 1


async def test_clicks_favourites_and_odd_times_never_stop_the_worker(
    app_settings: Settings, ingest_worker: Popen[bytes]
) -> None:
    # A click with item text once stopped the worker, and again after every restart.
    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    year_one = orjson.dumps(event_dict(3, user="c1", ts="0001-01-01T00:00:00+05:00"))
    async with IntentProducer(bootstrap, app_settings) as producer:
        await producer.send_events([event_dict(1, user="c1", action="click")])
        await producer.send_events([event_dict(2, user="c1", action="favourite")])
        await producer.send_raw(app_settings.topic_behaviors, year_one, b"c1")
        await producer.send_events([event_dict(4, user="c1", action="cart")])

    changelog = f"{app_settings.app_id}-contexts-changelog"

    def done(records: list) -> bool:  # type: ignore[type-arg]
        ctx = latest_context(records, "c1")
        return ctx is not None and "cart" in ctx.counts

    ctx = latest_context(await consume(bootstrap, changelog, until=done), "c1")
    assert ctx is not None
    assert ctx.counts == {"click": 1, "favourite": 1, "cart": 1}
    letters = await consume(bootstrap, app_settings.topic_dead_letters, until=lambda r: len(r) >= 1)
    assert [(r.value, dict(r.headers)["reason"]) for r in letters] == [(year_one, b"invalid_fields")]
    assert ingest_worker.poll() is None


async def test_a_message_that_fails_to_apply_is_parked_and_the_events_after_it_applied(
    app_settings: Settings,
) -> None:
    """The worker's context service on the real broker, its entity cache a test double that
    raises for one title: that message is dead-lettered with the error, the rest applied."""
    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    await ensure_topics(bootstrap, app_settings)
    service = ContextService(app_settings, bootstrap, scan_end_offsets=True)
    service.path.entities = FailingEntitiesDouble("poison")
    await service.start()
    try:
        poison = orjson.dumps(event_dict(2, user="p1", item_text="poison pill"))
        async with IntentProducer(bootstrap, app_settings) as producer:
            await producer.send_events([event_dict(1, user="p1")])
            await producer.send_raw(app_settings.topic_behaviors, poison, b"p1")
            await producer.send_events([event_dict(n, user="p1") for n in (3, 4)])
        letters = await consume(bootstrap, app_settings.topic_dead_letters, until=lambda r: len(r) >= 1)
        changelog = f"{app_settings.app_id}-contexts-changelog"

        def done(records: list) -> bool:  # type: ignore[type-arg]
            ctx = latest_context(records, "p1")
            return ctx is not None and ctx.version == 3

        ctx = latest_context(await consume(bootstrap, changelog, until=done), "p1")
    finally:
        await service.stop()
    assert len(letters) == 1
    headers = dict(letters[0].headers)
    assert (letters[0].value, letters[0].key, headers["reason"]) == (poison, b"p1", b"apply_failed")
    assert b"ZeroDivisionError" in headers["detail"]
    assert headers["source"].startswith(f"{app_settings.topic_behaviors}/".encode())
    assert ctx is not None
    assert ctx.counts == {"view": 3}
    assert service.counters.dead_lettered == {"apply_failed": 1}


async def test_every_active_user_gets_a_live_record_within_seconds_without_the_llm(
    app_settings: Settings, ingest_worker: Popen[bytes]
) -> None:
    """The fast path on real parts: a worker with no planner writes each changed user's
    record (live entries made by code) once per batch, whatever the LLM does."""
    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    users = {f"live{i}": 1 + i % 3 for i in range(30)}  # 1 to 3 events each
    events = [
        event_dict(100 * i + n, user=u) for i, (u, count) in enumerate(users.items()) for n in range(count)
    ]
    assert app_settings.redis_url is not None
    client = connect(app_settings.redis_url)
    store = IntentStore.from_settings(client, app_settings)
    try:
        async with IntentProducer(bootstrap, app_settings) as producer:
            await producer.send_events(events)

        async def all_written() -> list[IntentRecord] | None:
            found = [await store.get(u) for u in users]
            done = all(r is not None and r.context_version == users[r.user_id] for r in found)
            return [r for r in found if r is not None] if done else None

        written = await eventually(all_written, timeout_s=30)
    finally:
        await client.aclose()
    for record in written:
        assert record.trigger == "live"
        assert record.model == "none"
        assert [(t.tag, t.source) for t in record.tags] == [("samsung smartphone", "live")]
        assert record.tags[0].explanation.startswith(
            f"Viewed {('once', 'twice', '3 times')[users[record.user_id] - 1]}"
        )
    assert ingest_worker.poll() is None


async def test_live_records_carry_the_items_the_stream_has_seen(
    app_settings: Settings, tmp_path: Path
) -> None:
    """The catalog on real parts: the worker appends its batches' items to the shared feed,
    folds the feed, and the next records' tags carry those items; a purchase is not offered
    again to its buyer."""
    settings = app_settings.model_copy(update={"catalog_flush_s": 0.3})
    worker = start_worker(settings, resolve_endpoints(settings), tmp_path / "worker.log", planner=False)
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    assert settings.redis_url is not None
    client = connect(settings.redis_url)
    store = IntentStore.from_settings(client, settings)
    reader = IntentReader(client, prefix=settings.redis_key_prefix)
    try:
        async with IntentProducer(bootstrap, app_settings) as producer:
            await producer.send_events([event_dict(n, user="crowd") for n in range(7)])  # items 0-6
            await eventually(lambda: store.get("crowd"), timeout_s=30)
            await asyncio.sleep(1.5)  # shared within a flush (0.3 s here), folded within a poll (0.2 s)
            await producer.send_events(
                [event_dict(20, user="buyer"), event_dict(21, user="buyer", action="purchase")]
            )

        async def offered() -> list[str] | None:
            found = await reader.items("buyer", 10)
            return found or None

        items = await eventually(offered, timeout_s=30)
        described = await client.hlen(f"{settings.redis_key_prefix}:catalog:items")
        assert worker.poll() is None
    finally:
        await client.aclose()
        stop_worker(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])
    assert set(items) <= {f"item{n}" for n in range(7)}
    assert "item0" not in items  # event 21 bought item0 (n % 7): not offered again at once
    assert described == 7
