"""The stream clock that judges when a signal is in force (``stream.signals.StreamClock``)."""

from __future__ import annotations

from intentstream.stream.signals import StreamClock


class Ticking:
    """Test double: a wall clock and a monotonic clock the test moves by hand."""

    def __init__(self, wall: float) -> None:
        self.wall, self.mono = wall, 0.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def clock_on(t: Ticking) -> StreamClock:
    return StreamClock(wall=lambda: t.wall, monotonic=lambda: t.mono)


def test_before_any_event_the_clock_is_the_wall_clock() -> None:
    t = Ticking(1_800_000_000.0)
    clock = clock_on(t)
    assert not clock.started
    assert clock.now_s() == t.wall


def test_a_replay_sets_the_clock_to_the_logs_time_and_moves_it_with_the_events() -> None:
    t = Ticking(1_800_000_000.0)
    clock = clock_on(t)
    december_2010 = 1_291_939_200.0
    clock.observe(december_2010)  # the first event sets it, even backwards
    assert clock.started
    assert clock.now_s() == december_2010
    t.advance(2.0)
    assert clock.now_s() == december_2010 + 2.0  # time passes between events
    clock.observe(december_2010 + 86_400)  # a day later in the log, a moment later in the replay
    assert clock.now_s() == december_2010 + 86_400


def test_the_clock_never_goes_back_for_a_late_event() -> None:
    t = Ticking(1_800_000_000.0)
    clock = clock_on(t)
    clock.observe(1_000.0)
    t.advance(10.0)
    clock.observe(995.0)  # an event older than the clock's reading: out of order
    assert clock.now_s() == 1_010.0
    clock.observe(1_005.0)  # newer than the last event, still behind the clock
    assert clock.now_s() == 1_010.0
