"""Every worker reads every valid environment signal: the signals table's changelog, written
by the worker that validated it (``stream/app.py``), from its beginning; and judges when a
signal is in force by the stream's own clock (``StreamClock``), so a replayed log meets its
holidays where they fell."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from intentstream.kafka import KafkaSecurity
from intentstream.schemas.events import EnvSignal

log = logging.getLogger("intentstream.contexts")


async def follow_signals(
    bootstrap: str, topic: str, security: KafkaSecurity, on_signal: Callable[[EnvSignal], Awaitable[None]]
) -> None:
    """Hand every signal of ``topic`` to ``on_signal``, for ever. An unreadable value (it
    was validated upstream) is logged and skipped, never fatal."""
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", **security.options()
    )
    await reader.start()
    try:
        while True:
            batch = await reader.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if not record.value:
                        continue
                    try:
                        signal = EnvSignal.model_validate_json(record.value)
                    except ValidationError as exc:
                        log.error(
                            "unreadable signal at %s/%d/%d skipped: %s",
                            record.topic,
                            record.partition,
                            record.offset,
                            str(exc)[:300],
                        )
                        continue
                    await on_signal(signal)
    finally:
        await reader.stop()


class StreamClock:
    """Event time as this worker has seen it. The newest event time seen (the watermark),
    moved on by the wall-clock time since, and never back: live, it reads the wall clock
    (events are seconds old); in a replay of last year's log, it reads last year, so a
    Christmas signal is in force while the replay is in its Christmas weeks.

    Before the first event it reads the wall clock, and the first event sets it, forwards or
    back (a replay's worker starts in the log's time). An event can be at most the codec's
    future skew (5 minutes) ahead of the wall clock, so a hostile timestamp cannot move it far.
    """

    def __init__(
        self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._wall, self._monotonic = wall, monotonic
        self._mark: tuple[float, float] | None = None  # (event time, monotonic when seen)

    @property
    def started(self) -> bool:
        """Whether an event has set the clock (before that it is the wall clock)."""
        return self._mark is not None

    def observe(self, event_s: float) -> None:
        """An event of time ``event_s`` (epoch seconds) was applied."""
        if self._mark is None or event_s > self.now_s():
            self._mark = (event_s, self._monotonic())

    def now_s(self) -> float:
        if self._mark is None:
            return self._wall()
        event_s, seen = self._mark
        return event_s + (self._monotonic() - seen)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_s(), UTC)
