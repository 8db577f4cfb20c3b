"""Replay a recorded log into the behaviours topic, in file order (per-user order kept:
one producer, keyed by user, so each user's events land in one partition in order).

Unpaced replays take the fast path: events encoded once and published in per-partition
batches. A JSONL log is the wire format already, so its lines are sent as they are after a
cheap check (a JSON object with a ``user_id``); the worker validates every message and
dead-letters what is invalid, with the reason.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import orjson

from intentstream.deploy.stack import resolve_endpoints
from intentstream.perf.logs import LoadStats, LogFormat, load_events
from intentstream.producer import IntentProducer
from intentstream.progress import Meter
from intentstream.schemas.codec import encode
from intentstream.schemas.events import BehaviorEvent
from intentstream.settings import Settings


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


async def replay(
    settings: Settings,
    log: Path,
    fmt: LogFormat,
    *,
    limit: int | None = None,
    rate: float | None = None,
    speedup: float | None = None,
    bootstrap: str | None = None,
) -> tuple[int, LoadStats]:
    """Publish the log's events; returns how many the broker confirmed, and the load stats."""
    stats = LoadStats()
    meter = Meter(f"replaying {log.name}", limit)
    bootstrap = bootstrap or resolve_endpoints(settings).kafka_bootstrap
    async with IntentProducer(bootstrap, settings) as producer:
        if rate is not None or speedup is not None:
            events: Iterable[BehaviorEvent] = itertools.islice(load_events(log, fmt, stats), limit)
            sent = await producer.send_events(paced(events, meter, rate=rate, speedup=speedup))
        else:
            messages = messages_of(log, fmt, stats, settings.max_event_bytes)
            sent = await producer.send_encoded(metered(itertools.islice(messages, limit), meter))
    meter.close()
    return sent, stats


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
