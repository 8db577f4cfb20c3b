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


async def paced(events: Iterable[BehaviorEvent], rate: float, meter: Meter) -> AsyncIterator[BehaviorEvent]:
    """Yield events no faster than ``rate`` per second."""
    started = time.monotonic()
    for i, event in enumerate(events):
        ahead = i / rate - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
        meter.advance()
        yield event


def counted(events: Iterable[BehaviorEvent], meter: Meter) -> Iterator[BehaviorEvent]:
    for event in events:
        meter.advance()
        yield event


async def replay(
    settings: Settings, log: Path, fmt: LogFormat, *, limit: int | None = None, rate: float | None = None
) -> tuple[int, LoadStats]:
    """Publish the log's events; returns how many the broker confirmed, and the load stats."""
    stats = LoadStats()
    events: Iterable[BehaviorEvent] = load_events(log, fmt, stats)
    if limit is not None:
        events = itertools.islice(events, limit)
    meter = Meter(f"replaying {log.name}", limit)
    bootstrap = resolve_endpoints(settings).kafka_bootstrap
    async with IntentProducer(bootstrap, settings) as producer:
        source = paced(events, rate, meter) if rate else counted(events, meter)
        sent = await producer.send_events(source)
    meter.close()
    return sent, stats
