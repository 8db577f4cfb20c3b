"""Replay a recorded log into the behaviours topic, in file order (per-user order kept:
one producer, keyed by user, so each user's events land in one partition in order).

Unpaced replays take the fast path: events encoded once and published in per-partition
batches. A JSONL log is the wire format already, so its lines are sent as they are after a
cheap check (a JSON object with a ``user_id``); the worker validates every message and
dead-letters what is invalid, with the reason.

With ``signals="holidays"`` the replay also carries the environment signals of the log's own
time: the holiday calendars (``intentstream.signal_sources``) of the countries its users'
regions name, over the days it spans, each signal published when the replay reaches its
moment (after the batch of events that passes its start). The worker judges them by the
stream's clock, so they are in force where they fell in the log.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from intentstream.deploy.stack import resolve_endpoints
from intentstream.perf.logs import LoadStats, LogFormat, load_events
from intentstream.producer import IntentProducer
from intentstream.progress import Meter
from intentstream.schemas.codec import encode
from intentstream.schemas.events import BehaviorEvent, EnvSignal
from intentstream.settings import Settings
from intentstream.signal_sources import CalendarError, SignalSource, countries_of, holiday_signals


def due_at(
    event: BehaviorEvent, first_ts: float, index: int, rate: float | None, speedup: float | None
) -> float:
    """Seconds after the start of the replay when ``event`` (the ``index``-th) is due:
    ``rate`` events per second, or the log's own timing ``speedup`` times faster (events
    out of time order are sent at once, never reordered)."""
    if rate is not None:
        return index / rate
    if speedup is not None:
        return max(0.0, (event.ts.timestamp() - first_ts) / speedup)
    return 0.0


async def paced(
    events: Iterable[BehaviorEvent], meter: Meter, *, rate: float | None, speedup: float | None
) -> AsyncIterator[BehaviorEvent]:
    """Yield events no sooner than they are due."""
    started = time.monotonic()
    first_ts: float | None = None
    for i, event in enumerate(events):
        first_ts = event.ts.timestamp() if first_ts is None else first_ts
        ahead = due_at(event, first_ts, i, rate, speedup) - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
        meter.advance()
        yield event


def jsonl_messages(path: Path, stats: LoadStats, max_bytes: int) -> Iterator[tuple[bytes, bytes]]:
    """``(user id, line)`` for each line of a JSONL log that is a JSON object with a string
    ``user_id`` and at most ``max_bytes`` long; anything else is counted in ``stats`` (by
    reason) and skipped."""
    if not path.exists():
        raise FileNotFoundError(f"no log at {path}")
    with path.open("rb") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            stats.rows += 1
            if len(line) > max_bytes:
                stats.skipped["oversized"] += 1
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                stats.skipped["malformed_json"] += 1
                continue
            user = data.get("user_id") if isinstance(data, dict) else None
            if not isinstance(user, str) or not user:
                stats.skipped["no_user_id"] += 1
                continue
            stats.events += 1
            yield user.encode(), line


def encoded(events: Iterable[BehaviorEvent]) -> Iterator[tuple[bytes, bytes]]:
    for e in events:
        yield e.user_id.encode(), encode(e)


def messages_of(log: Path, fmt: LogFormat, stats: LoadStats, max_bytes: int) -> Iterator[tuple[bytes, bytes]]:
    """A log's ``(user id, JSON)`` messages for the fast path: JSONL lines as they are,
    other formats' events encoded once."""
    if fmt == "jsonl":
        return jsonl_messages(log, stats, max_bytes)
    return encoded(load_events(log, fmt, stats))


def metered(messages: Iterable[tuple[bytes, bytes]], meter: Meter) -> Iterator[tuple[bytes, bytes]]:
    for message in messages:
        meter.advance()
        yield message


def event_time(value: bytes) -> float | None:
    """The ``ts`` of an encoded event, in epoch seconds (None when it has none readable:
    the worker dead-letters such a message)."""
    try:
        ts = orjson.loads(value).get("ts")
        moment = datetime.fromisoformat(ts) if isinstance(ts, str) else None
    except (orjson.JSONDecodeError, AttributeError, ValueError):
        return None
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


REPLAY_CHUNK = 5_000  # events per send between signal checks (unpaced, with signals)


@dataclass
class LogCalendar:
    """The signals a replay of one log carries, and what it knows of the log's regions."""

    signals: list[EnvSignal]
    users_by_region: dict[str, int] = field(default_factory=dict)  # distinct users per region
    regions_without_calendar: list[str] = field(default_factory=list)
    first: datetime | None = None
    last: datetime | None = None

    @classmethod
    def of(cls, users: dict[str, set[bytes]], first: float, last: float) -> LogCalendar:
        """The holiday signals (and lead-ups) of the countries the regions of ``users``
        (region -> user ids) name, over the days from ``first`` to ``last`` (epoch s)."""
        start, end = datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last, UTC)
        countries, unknown = countries_of(users)
        return cls(
            holiday_signals(countries, start.date(), end.date(), now=end),
            users_by_region={r: len(u) for r, u in sorted(users.items())},
            regions_without_calendar=unknown,
            first=start,
            last=end,
        )

    def summary(self) -> dict[str, object]:
        return {
            "source": "holidays",
            "signals": len(self.signals),
            "by_kind": dict(Counter(s.kind.value for s in self.signals)),
            "span": [self.first.isoformat(), self.last.isoformat()] if self.first and self.last else None,
            "users_by_region": self.users_by_region,
            "regions_without_calendar": self.regions_without_calendar,
        }


def log_calendar(messages: Iterable[tuple[bytes, bytes]]) -> LogCalendar:
    """The holiday signals (and lead-ups) of the countries the log's regions name, over the
    days the log spans: one pass over its messages."""
    users: dict[str, set[bytes]] = {}
    first = last = None
    for key, value in messages:
        data = orjson.loads(value)
        at = event_time(value)
        if at is not None:
            first = at if first is None else min(first, at)
            last = at if last is None else max(last, at)
        region = data.get("region")
        if isinstance(region, str) and region:
            users.setdefault(region, set()).add(key)
    if first is None or last is None:
        return LogCalendar([])
    return LogCalendar.of(users, first, last)


class SignalsAlong:
    """Signals published as a replay reaches their moment: ``passing`` watches the events go
    by (their time) and ``publish_due`` sends every signal whose start they have passed."""

    def __init__(self, signals: Iterable[EnvSignal]) -> None:
        self.pending = deque(sorted(signals, key=lambda s: s.valid_from))
        self.due: list[EnvSignal] = []
        self.published = 0

    def reach(self, at_s: float) -> None:
        """The replay has reached event time ``at_s``: the signals started by then are due."""
        while self.pending and at_s >= self.pending[0].valid_from.timestamp():
            self.due.append(self.pending.popleft())

    def passing(self, messages: Iterable[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
        for key, value in messages:
            if self.pending and (at := event_time(value)) is not None:
                self.reach(at)
            yield key, value

    async def send(
        self, producer: IntentProducer, messages: Iterable[tuple[bytes, bytes]], chunk: int = REPLAY_CHUNK
    ) -> int:
        """Publish ``messages`` in chunks, each followed by the signals its events reached,
        and the signals left at the end; returns how many messages the broker confirmed."""
        sent = 0
        passing = self.passing(messages)
        while batch := list(itertools.islice(passing, chunk)):
            sent += await producer.send_encoded(batch)
            await self.publish_due(producer)
        await self.publish_due(producer, everything=True)
        return sent

    async def publish_due(self, producer: IntentProducer, everything: bool = False) -> None:
        """Send the due signals (``everything``: the rest too, at the end of the log)."""
        if everything:
            self.due.extend(self.pending)
            self.pending.clear()
        for signal in self.due:
            await producer.send_signal(signal)
        self.published += len(self.due)
        self.due.clear()


def calendar_for(
    source: SignalSource, log: Path, fmt: LogFormat, max_bytes: int, limit: int | None = None
) -> LogCalendar | None:
    """The calendar a replay of ``log`` carries (None for ``"none"``)."""
    if source == "none":
        return None
    try:
        return log_calendar(itertools.islice(messages_of(log, fmt, LoadStats(), max_bytes), limit))
    except CalendarError as exc:
        raise CalendarError(f"{log}: the log's holiday calendar: {exc}") from exc


async def replay(
    settings: Settings,
    log: Path,
    fmt: LogFormat,
    *,
    limit: int | None = None,
    rate: float | None = None,
    speedup: float | None = None,
    bootstrap: str | None = None,
    signals: SignalSource = "none",
) -> tuple[int, LoadStats, LogCalendar | None]:
    """Publish the log's events (and, with ``signals``, the calendar's signals at their
    moments); returns how many events the broker confirmed, the load stats and the calendar."""
    stats = LoadStats()
    calendar = calendar_for(signals, log, fmt, settings.max_event_bytes, limit)
    along = SignalsAlong(calendar.signals if calendar else [])
    meter = Meter(f"replaying {log.name}", limit)
    bootstrap = bootstrap or resolve_endpoints(settings).kafka_bootstrap
    async with IntentProducer(bootstrap, settings) as producer:
        if rate is not None or speedup is not None:
            events: Iterable[BehaviorEvent] = itertools.islice(load_events(log, fmt, stats), limit)
            sent = await producer.send_events(
                signalled(paced(events, meter, rate=rate, speedup=speedup), along, producer)
            )
        else:
            messages = metered(
                itertools.islice(messages_of(log, fmt, stats, settings.max_event_bytes), limit), meter
            )
            sent = await (along.send(producer, messages) if calendar else producer.send_encoded(messages))
        await along.publish_due(producer, everything=True)
    meter.close()
    return sent, stats, calendar


async def signalled(
    events: AsyncIterator[BehaviorEvent], along: SignalsAlong, producer: IntentProducer
) -> AsyncIterator[BehaviorEvent]:
    """Paced events, with each signal published before the first event past its start."""
    async for event in events:
        along.reach(event.ts.timestamp())
        await along.publish_due(producer)
        yield event


def convert(log: Path, fmt: LogFormat, out: Path, loops: int = 1) -> LoadStats:
    """Write ``log`` as JSONL (the project's event schema, one event per line). With
    ``loops`` > 1 the log is written that many times, loop k with user and event ids renamed
    ``<id>~k`` and time shifted by k spans of the log: a bigger log of the same shape."""
    stats = LoadStats()
    events = list(load_events(log, fmt, stats))
    meter = Meter(f"converting {log.name}", len(events) * loops)
    span = (
        (max(e.ts for e in events) - min(e.ts for e in events) + timedelta(seconds=1))
        if events
        else timedelta()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        for loop in range(loops):
            for event in events:
                if loop:
                    event = event.model_copy(
                        update={
                            "user_id": f"{event.user_id}~{loop}",
                            "event_id": f"{event.event_id}~{loop}",
                            "ts": event.ts + span * loop,
                        }
                    )
                f.write(encode(event) + b"\n")
                meter.advance()
    meter.close()
    return stats
