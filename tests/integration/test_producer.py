"""The producer client against the real broker."""

from __future__ import annotations

import orjson
import pytest

from intentstream.producer import IntentProducer
from intentstream.settings import Settings
from schemas.codec import InvalidMessage
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
