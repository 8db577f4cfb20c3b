"""Loaders cope with the real logs' messiness and skip bad rows with a count."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest

from intentstream.perf.logs import LoadStats, load_events
from intentstream.schemas.events import Action
from intentstream.settings import Settings
from tests.helpers import event_dict

DATASETS = Settings().datasets_dir


def test_rees46_real_rows_load_despite_crlf_and_empty_fields() -> None:
    stats = LoadStats()
    events = list(itertools.islice(load_events(DATASETS / "rees46" / "events.csv", "rees46", stats), 200))
    assert len(events) == 200
    first = events[0]
    assert first.user_id == "541312140"
    assert first.action is Action.VIEW
    assert first.category is None
    assert first.brand == "shiseido"
    assert not any("\r" in (e.item_text or "") or "\r" in e.event_id for e in events)
    assert len({e.event_id for e in events}) == 200
    assert events[1].item_text == "aqua water heater"
    assert events[1].category == "appliances.environment.water_heater"


def test_rees46_whole_file_has_the_documented_counts() -> None:
    stats = LoadStats()
    events = list(load_events(DATASETS / "rees46" / "events.csv", "rees46", stats))
    assert stats.events == len(events) == 17_435
    assert len({e.user_id for e in events}) == 4_505
    assert sum(e.action is Action.PURCHASE for e in events) == 214


def test_online_retail_skips_cancellations_and_restores_spaces() -> None:
    stats = LoadStats()
    events = list(load_events(DATASETS / "online_retail" / "online_retail.csv", "online-retail", stats))
    assert stats.skipped["cancellation"] > 0
    assert stats.events + sum(stats.skipped.values()) == stats.rows == 20_000
    assert events[0].item_text == "white hanging heart t light holder"
    assert events[0].region == "United Kingdom"
    assert all(e.action is Action.PURCHASE for e in events)


def test_malformed_rows_are_counted_not_fatal(tmp_path: Path) -> None:
    log = tmp_path / "bad.csv"
    log.write_bytes(
        b"event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\r\n"
        b"2019-10-01 00:00:00 UTC,view,1,2,a.b,x,1.0,7,s\r\n"
        b"not a date,view,1,2,a.b,x,1.0,7,s\r\n"
        b"2019-10-01 00:00:00 UTC,remove_from_cart,1,2,a.b,x,1.0,7,s\r\n"
        b"2019-10-01 00:00:00 UTC,view,1,2,a.b,x,free,7,s\r\n"
        b"2019-10-01 00:00:00 UTC,view\r\n"
    )
    stats = LoadStats()
    assert len(list(load_events(log, "rees46", stats))) == 1
    assert stats.skipped == {"invalid_row": 3, "unknown_event_type": 1}


def test_jsonl_is_the_projects_own_schema(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    log.write_bytes(orjson.dumps(event_dict(1)) + b"\n\n{broken\n" + orjson.dumps(event_dict(2)) + b"\n")
    stats = LoadStats()
    assert [e.event_id for e in load_events(log, "jsonl", stats)] == ["e1", "e2"]
    assert stats.skipped == {"invalid_row": 1}


def test_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no log at"):
        load_events(tmp_path / "nope.csv", "rees46")
