"""The producer client against the real broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from intentstream.perf.replay import replay
from intentstream.producer import IntentProducer
from intentstream.schemas.codec import InvalidMessage, decode_signal
from intentstream.settings import Settings
from tests.helpers import consume, event_dict, signal_dict

pytestmark = pytest.mark.integration


async def test_events_are_published_keyed_by_user_in_order(app_settings: Settings) -> None:
    events = [event_dict(n, user=f"user{n % 3}") for n in range(30)]
    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    async with IntentProducer(bootstrap, app_settings) as producer:
        assert await producer.send_events(events) == 30
    records = await consume(bootstrap, app_settings.topic_behaviors, until=lambda r: len(r) >= 30)
    assert len(records) == 30
    by_user: dict[bytes, list[str]] = {}
    for r in records:
        assert r.key == orjson.loads(r.value)["user_id"].encode()
        by_user.setdefault(r.key, []).append(orjson.loads(r.value)["event_id"])
    for user, ids in by_user.items():
        expected = [e["event_id"] for e in events if e["user_id"].encode() == user]
        assert ids == expected


async def test_invalid_event_is_refused_before_sending(app_settings: Settings) -> None:
    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    async with IntentProducer(bootstrap, app_settings) as producer:
        with pytest.raises(InvalidMessage, match="invalid_fields"):
            await producer.send_events([event_dict(1), {**event_dict(2), "action": "teleport"}])
        await producer.send_signal(signal_dict())
    # The valid event before the invalid one was sent; nothing after it.
    records = await consume(bootstrap, app_settings.topic_behaviors, until=lambda r: len(r) >= 1, timeout_s=5)
    assert [orjson.loads(r.value)["event_id"] for r in records] == ["e1"]


async def test_oversized_limit_is_enforced(app_settings: Settings) -> None:
    tight = app_settings.model_copy(update={"max_event_bytes": 300})
    assert tight.kafka_bootstrap is not None
    async with IntentProducer(tight.kafka_bootstrap, tight) as producer:
        with pytest.raises(InvalidMessage, match="oversized"):
            await producer.send_event(event_dict(1, item_text="y" * 250))


async def test_a_jsonl_replay_keeps_each_users_order_and_partition(
    app_settings: Settings, tmp_path: Path
) -> None:
    events = [event_dict(n, user=f"user{n % 7}") for n in range(3000)]
    log = tmp_path / "log.jsonl"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events) + b"{broken\n")
    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    sent, stats, _ = await replay(app_settings, log, "jsonl", bootstrap=bootstrap)
    assert sent == 3000
    assert dict(stats.skipped) == {"malformed_json": 1}
    async with IntentProducer(bootstrap, app_settings) as producer:  # the per-message path
        await producer.send_events([event_dict(9999, user="user3")])
    records = await consume(bootstrap, app_settings.topic_behaviors, until=lambda r: len(r) >= 3001)
    assert len(records) == 3001
    by_user: dict[bytes, list[str]] = {}
    partition_of: dict[bytes, set[int]] = {}
    for r in records:
        by_user.setdefault(r.key, []).append(orjson.loads(r.value)["event_id"])
        partition_of.setdefault(r.key, set()).add(r.partition)
    assert all(len(p) == 1 for p in partition_of.values())  # both paths pick the same partition
    for user, ids in by_user.items():
        expected = [e["event_id"] for e in events if e["user_id"].encode() == user]
        assert ids == expected + (["e9999"] if user == b"user3" else [])


async def test_holiday_signals_from_the_calendar_reach_the_signals_topic(app_settings: Settings) -> None:
    from intentstream.cli import build_parser, cmd_signals

    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    args = build_parser().parse_args(
        ["signals", "--holidays", "GB=United Kingdom,FR=France", "--from", "2010-12-24", "--to", "2010-12-26"]
    )
    assert await asyncio.to_thread(cmd_signals, app_settings, args) == 0
    records = await consume(bootstrap, app_settings.topic_signals, until=lambda r: len(r) >= 5, timeout_s=30)
    signals = [decode_signal(r.value, now=datetime.now(UTC)) for r in records]
    assert {(s.signal_id, r.key) for s, r in zip(signals, records, strict=True)} == {
        ("leadup-FR-20101225-christmas-day", b"France"),
        ("leadup-GB-20101225-christmas-day", b"United Kingdom"),
        ("holiday-FR-20101225-christmas-day", b"France"),
        ("holiday-GB-20101225-christmas-day", b"United Kingdom"),
        ("holiday-GB-20101226-boxing-day", b"United Kingdom"),  # not a holiday in France
    }


async def test_a_replay_with_holidays_carries_the_calendar_of_its_users_countries(
    app_settings: Settings, tmp_path: Path
) -> None:
    events = [
        event_dict(d, user=user, region=region, ts=f"2010-12-{d:02d}T10:00:00+00:00")
        for d in range(1, 15)
        for user, region in (("london", "United Kingdom"), ("lisbon", "Portugal"), ("nowhere", "Unspecified"))
    ]
    log = tmp_path / "december.jsonl"
    log.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    sent, _, calendar = await replay(app_settings, log, "jsonl", bootstrap=bootstrap, signals="holidays")
    assert sent == len(events)
    assert calendar is not None
    assert calendar.regions_without_calendar == ["Unspecified"]
    records = await consume(
        bootstrap, app_settings.topic_signals, until=lambda r: len(r) >= len(calendar.signals), timeout_s=30
    )
    published = {(decode_signal(r.value, now=datetime.now(UTC)).signal_id, r.key) for r in records}
    assert published == {
        ("leadup-GB-20101225-christmas-day", b"United Kingdom"),
        ("leadup-PT-20101225-christmas-day", b"Portugal"),
        ("holiday-PT-20101201-restoration-of-independence-day", b"Portugal"),
        ("holiday-PT-20101208-immaculate-conception", b"Portugal"),
    }
