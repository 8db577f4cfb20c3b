"""Replay a recorded log into the behaviours topic, in file order (per-user order kept:
one producer, keyed by user, so each user's events land in one partition in order)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

from deploy.stack import resolve_endpoints
from intentstream.producer import IntentProducer
from intentstream.progress import Meter
from intentstream.settings import Settings
from perf.logs import LoadStats, LogFormat, load_events
from schemas.events import BehaviorEvent


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


def counted(events: Iterable[BehaviorEvent], meter: Meter) -> Iterator[BehaviorEvent]:
    for event in events:
        meter.advance()
        yield event


async def replay(
    settings: Settings,
    log: Path,
    fmt: LogFormat,
    *,
    limit: int | None = None,
    rate: float | None = None,
    speedup: float | None = None,
) -> tuple[int, LoadStats]:
    """Publish the log's events; returns how many the broker confirmed, and the load stats."""
    stats = LoadStats()
    events: Iterable[BehaviorEvent] = load_events(log, fmt, stats)
    if limit is not None:
        events = itertools.islice(events, limit)
    meter = Meter(f"replaying {log.name}", limit)
    bootstrap = resolve_endpoints(settings).kafka_bootstrap
    async with IntentProducer(bootstrap, settings) as producer:
        paced_ = rate is not None or speedup is not None
        source = paced(events, meter, rate=rate, speedup=speedup) if paced_ else counted(events, meter)
        sent = await producer.send_events(source)
    meter.close()
    return sent, stats
