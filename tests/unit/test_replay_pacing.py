"""When each event of a replay is due: by rate, by the log's own timing sped up, or at once."""

from __future__ import annotations

from datetime import timedelta

from perf.replay import due_at
from schemas.events import BehaviorEvent
from tests.helpers import event_dict


def at(n: int) -> BehaviorEvent:
    return BehaviorEvent.model_validate(event_dict(n))  # event n is n seconds after event 0


def test_rate_spaces_events_evenly() -> None:
    first = at(0).ts.timestamp()
    assert [due_at(at(n), first, i, 4.0, None) for i, n in enumerate([0, 100, 5])] == [0.0, 0.25, 0.5]


def test_speedup_follows_the_log_time_faster() -> None:
    first = at(0).ts.timestamp()
    assert due_at(at(120), first, 1, None, 60.0) == 2.0
    assert due_at(at(0), first, 2, None, 60.0) == 0.0


def test_an_event_earlier_than_the_first_is_sent_at_once() -> None:
    first = (at(0).ts + timedelta(seconds=30)).timestamp()
    assert due_at(at(0), first, 1, None, 10.0) == 0.0


def test_no_pacing_means_now() -> None:
    assert due_at(at(50), 0.0, 9, None, None) == 0.0
