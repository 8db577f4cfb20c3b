"""The broker watchdog: aiokafka reconnects by itself, quietly; this makes a broker that stays
away for longer than ``broker_outage_s`` stop the worker with a clear error instead, and
beats the worker's health (``/healthz`` and ``/readyz``)."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from intentstream.stream.changelog import BrokerUnavailable
from intentstream.stream.metrics import Health

log = logging.getLogger("intentstream.contexts")


async def watch_broker(producer: AIOKafkaProducer, bootstrap: str, outage_s: float, health: Health) -> None:
    """Ask the broker for the metadata of the topics ``producer`` tracks every second;
    raise :class:`BrokerUnavailable` once it has not answered for ``outage_s``."""
    last_ok = time.monotonic()
    while True:
        await asyncio.sleep(1.0)
        health.beat = time.monotonic()
        try:
            # Metadata of the few topics this client tracks: a real round trip, and a small
            # one (all-topics metadata can take seconds on a broker with many topics).
            if not await asyncio.wait_for(producer.client.force_metadata_update(), timeout=5.0):
                raise KafkaError("metadata update failed")
            health.broker = time.monotonic()
        except (KafkaError, OSError, TimeoutError) as exc:
            away = time.monotonic() - last_ok
            if away > outage_s:
                raise BrokerUnavailable(
                    f"the broker at {bootstrap} has not answered for {away:.0f}s "
                    f"(INTENTSTREAM_BROKER_OUTAGE_S={outage_s:.0f}): {exc!r}"
                ) from exc
            log.warning("the broker at %s does not answer (%.0fs so far): %r", bootstrap, away, exc)
        else:
            if time.monotonic() - last_ok > 3.0:
                log.info("the broker at %s answers again", bootstrap)
            last_ok = time.monotonic()
