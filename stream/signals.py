"""Every worker reads every valid environment signal: the signals table's changelog, written
by the worker that validated it (``stream/app.py``), from its beginning."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

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
