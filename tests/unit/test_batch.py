"""The worker's batch path (``stream.batch.BatchPath.apply``): every message is applied, a
duplicate, or dead-lettered with a reason; no message's content can stop the worker."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intentstream.schemas.events import ACTION_DONE, ACTION_WEIGHT, Action
from intentstream.settings import Settings
from intentstream.stream.batch import APPLY_FAILED, BatchPath, Message
from intentstream.stream.context import UserContext
from intentstream.stream.entities import EntityCache
from tests.helpers import NOW, FailingEntitiesDouble, essence, message_of


def path(home: Path, entities: EntityCache | None = None) -> BatchPath:
    return BatchPath.from_settings(Settings(home=home), entities)


@pytest.mark.parametrize("action", list(Action))
def test_every_action_has_one_weight_and_one_phrase(action: Action) -> None:
    assert ACTION_WEIGHT[action] > 0
    assert ACTION_WEIGHT[action.value] == ACTION_WEIGHT[action]  # as contexts keep actions
    assert ACTION_DONE[action]


def test_weights_rank_actions_by_how_much_they_say() -> None:
    w = ACTION_WEIGHT
    assert w[Action.VIEW] < w[Action.CLICK] < w[Action.FAVOURITE] < w[Action.CART] < w[Action.PURCHASE]


@pytest.mark.parametrize("action", ["click", "favourite"])
def test_a_click_or_favourite_with_item_text_is_applied(tmp_path: Path, action: str) -> None:
    # The event that once stopped the worker after every restart (no weight for it).
    contexts: dict[int, dict[str, UserContext]] = {0: {}}
    outcome = path(tmp_path).apply(contexts, [message_of(1, action=action)], NOW)
    assert (outcome.applied, outcome.dead) == (1, [])
    assert contexts[0]["u1"].counts == {action: 1}


def test_an_event_that_fails_to_apply_is_dead_lettered_and_the_batch_goes_on(tmp_path: Path) -> None:
    bp = path(tmp_path, FailingEntitiesDouble("poison"))
    before = UserContext("u1")
    contexts = {0: {"u1": before}}
    sent = [
        message_of(1),
        message_of(2),
        message_of(3, item_text="poison pill", item_id="px"),
        message_of(4),
        message_of(5, user="u2"),
    ]
    outcome = bp.apply(contexts, sent, NOW)

    assert [(d.message, d.reason, d.message_id) for d in outcome.dead] == [(sent[2], APPLY_FAILED, "e3")]
    assert "ZeroDivisionError: cannot embed 'poison pill'" in outcome.dead[0].detail
    assert outcome.applied == 4
    assert outcome.offsets == {0: 6}  # past the failed message: it is parked, not retried
    assert set(outcome.changed) == {"u1", "u2"}
    # u1's context is what the other three events make, as if the failed one never came
    clean = {0: {"u1": UserContext("u1")}}
    path(tmp_path).apply(clean, [sent[0], sent[1], sent[3]], NOW)
    assert contexts[0]["u1"] is before  # rolled back in place: queued re-plans hold it
    assert essence(before) == essence(clean[0]["u1"])
    assert before.offsets == {"0": 4}
    # the items taken one after another, for the catalog: the failed event made no pair
    assert outcome.pairs == [("item1", "item2"), ("item2", "item4"), ("item1", "item4")]


def test_a_duplicate_or_a_search_makes_no_co_viewed_pair(tmp_path: Path) -> None:
    contexts: dict[int, dict[str, UserContext]] = {0: {}}
    sent = [message_of(1), message_of(1, offset=2), message_of(3, action="search"), message_of(4)]
    outcome = path(tmp_path).apply(contexts, sent, NOW)
    assert outcome.duplicates == 1
    assert outcome.pairs == [("item1", "item4")]


def test_a_new_user_whose_only_event_fails_leaves_no_context(tmp_path: Path) -> None:
    contexts: dict[int, dict[str, UserContext]] = {0: {}}
    outcome = path(tmp_path, FailingEntitiesDouble("poison")).apply(
        contexts, [message_of(1, user="new", item_text="poison")], NOW
    )
    assert [d.reason for d in outcome.dead] == [APPLY_FAILED]
    assert contexts == {0: {}}
    assert outcome.changed == {}


def test_a_timestamp_the_calendar_cannot_hold_in_utc_is_dead_lettered_as_invalid(tmp_path: Path) -> None:
    # Year 1 at +05:00 is before 0001-01-01 in UTC: not a time the context can hold.
    sent = [message_of(1, ts="0001-01-01T00:00:00+05:00")]
    outcome = path(tmp_path).apply({0: {}}, sent, NOW)
    assert [d.reason for d in outcome.dead] == ["invalid_fields"]


def test_messages_of_partitions_not_owned_are_skipped(tmp_path: Path) -> None:
    outcome = path(tmp_path).apply({0: {}}, [message_of(1, partition=1)], NOW)
    assert (outcome.applied, outcome.dead, outcome.offsets) == (0, [], {})


# -- property: any schema-valid event, and any bytes, through the real batch path ---------------

_TEXT = st.text(st.characters(codec="utf-8", blacklist_categories=["Cs"]), max_size=300)
_SHORT = st.one_of(st.text(string.ascii_letters + " -_.", min_size=1, max_size=64), _TEXT)
_ID = st.text(st.characters(codec="utf-8", blacklist_categories=["Cs"]), min_size=1, max_size=128)
_ZONES = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])
_TIMES = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=(NOW + timedelta(minutes=10)).replace(tzinfo=None),
    timezones=_ZONES,
)
_PRICES = st.one_of(st.none(), st.sampled_from([0.0, 1e-9, 0.01, 1e9]), st.floats(0, 1e9))


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    action = draw(st.sampled_from(list(Action)))
    event: dict[str, Any] = {
        "event_id": draw(_ID),
        "user_id": draw(st.one_of(st.sampled_from(["u1", "u2", "ü" * 128]), _ID)),
        "action": action.value,
        "ts": draw(_TIMES).isoformat(),
    }
    if action is Action.SEARCH:
        event["query"] = draw(_TEXT.filter(lambda t: bool(t.strip())))
    else:
        event["item_id"] = draw(_ID)
    for name, values in (
        ("item_text", _TEXT),
        ("category", st.one_of(_TEXT, st.just("a." * 100 + "b"), st.just("..."))),
        ("brand", _SHORT),
        ("price", _PRICES),
        ("region", _SHORT),
    ):
        if draw(st.booleans()):
            event[name] = draw(values)
    return event


@st.composite
def messages(draw: st.DrawFn) -> list[Message]:
    out: list[Message] = []
    kinds = st.sampled_from(["valid", "valid", "bytes", "dup", "oversized"])
    for offset, kind in enumerate(draw(st.lists(kinds, max_size=12))):
        value: bytes | None
        if kind == "bytes":
            value, key = draw(st.binary(max_size=400)), draw(st.one_of(st.none(), st.binary(max_size=20)))
        elif kind == "dup" and out:
            value, key = out[-1].value, out[-1].key
        else:
            event = draw(valid_events())
            if kind == "oversized":
                event["item_text"] = "z" * 20_000  # past max_event_bytes: parked whole
            value, key = orjson.dumps(event), event["user_id"].strip().encode()
        out.append(Message("behaviors", draw(st.sampled_from([0, 1])), offset, key, value, 0.0))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(messages(), min_size=1, max_size=3))
def test_any_message_is_applied_a_duplicate_or_dead_lettered_never_raised(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[Message]]
) -> None:
    bp = path(tmp_path_factory.getbasetemp())
    contexts: dict[int, dict[str, UserContext]] = {0: {}, 1: {}}
    now = datetime.now(UTC)
    for sent in batches:
        outcome = bp.apply(contexts, sent, now)
        assert outcome.applied + outcome.duplicates + len(outcome.dead) == len(sent)
        # A schema-valid event never trips the code: only a codec reason may park it.
        assert not [d for d in outcome.dead if d.reason == APPLY_FAILED], outcome.dead
        for ctx in contexts[0].values():
            UserContext.from_bytes(ctx.to_bytes())  # what the changelog gets reads back
