"""The contexts changelog: where a worker's contexts are made durable and rebuilt from.

    Changelog.send(staged)     the contexts as they are now, not yet awaited
    Changelog.deliver(staged)  until the broker acknowledged them (the one retrying writer)
    Changelog.restore(parts)   the newest context per user of some partitions, read to the end

Every context a batch changed is acknowledged here before the batch's offsets are committed;
a partition's contexts are rebuilt from its changelog partition when it is assigned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from intentstream.kafka import KafkaSecurity
from intentstream.settings import Settings
from intentstream.stream.context import UserContext
from intentstream.stream.tansu import scanned_end_offsets

log = logging.getLogger("intentstream.contexts")


class BrokerUnavailable(RuntimeError):
    """The broker did not take the changelog writes within the outage limit."""


def contexts_changelog(settings: Settings) -> str:
    return f"{settings.app_id}-contexts-changelog"


def signals_changelog(settings: Settings) -> str:
    return f"{settings.app_id}-signals-changelog"


@dataclass
class Staged:
    """Contexts whose changelog writes are in flight, with the batch they came from (its
    offsets to commit once acknowledged; none for the sweep's or a signal's writes)."""

    records: list[tuple[int, UserContext]]  # (changelog partition, context)
    offsets: dict[TopicPartition, int]
    produced_ms: list[float]
    apply_s: float
    live: asyncio.Task[Any] | None = None  # the batch's live record writes (stream/records.py)
    acked: asyncio.Future[Any] | None = None
    acked_ms: float = 0.0

    def mark_acked(self, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.acked_ms = time.time() * 1000


class Changelog:
    """Writes and reads one app's contexts changelog through the worker's Kafka clients."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        security: KafkaSecurity,
        producer: AIOKafkaProducer,
        *,
        scan_end_offsets: bool,
    ) -> None:
        self.topic = contexts_changelog(settings)
        self.bootstrap = bootstrap
        self.security = security
        self.producer = producer
        self.outage_s = settings.broker_outage_s
        self.scan_end_offsets = scan_end_offsets

    async def send(self, staged: Staged) -> None:
        """Send the contexts as they are now (not yet awaited). A resend after a failure thus
        carries each context's newest state: it can never land a stale context after a newer
        one already written by a later batch."""
        futures = [
            await self.producer.send(self.topic, ctx.to_bytes(), key=ctx.user_id.encode(), partition=p)
            for p, ctx in staged.records
        ]
        staged.acked = asyncio.gather(*futures)
        staged.acked.add_done_callback(staged.mark_acked)

    async def deliver(self, staged: Staged) -> None:
        """The one retrying writer: wait for the staged writes' acks, resending through an
        outage of up to ``broker_outage_s``, then stop the worker with a clear error."""
        deadline = time.monotonic() + self.outage_s
        while True:
            try:
                if staged.acked is None:
                    await self.send(staged)
                assert staged.acked is not None
                await staged.acked
                return
            except KafkaError as exc:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"the broker at {self.bootstrap} did not take {len(staged.records)} context "
                        f"writes for {self.outage_s:.0f}s: {exc}"
                    ) from exc
                log.warning("changelog write failed (%s); retrying", exc)
                await asyncio.sleep(1.0)
                staged.acked = None

    async def restore(self, partitions: list[int]) -> dict[int, dict[str, UserContext]]:
        """Read the changelog partitions to their end; the newest value per user wins."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        options = self.security.options()
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False, **options
        )
        await reader.start()
        found: dict[int, dict[str, bytes]] = defaultdict(dict)
        try:
            reader.assign(tps)
            ends = await reader.end_offsets(tps)
            if self.scan_end_offsets:
                ends = await scanned_end_offsets(self.bootstrap, tps, ends, options)
            await reader.seek_to_beginning(*tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                batch = await reader.getmany(*remaining, timeout_ms=1000, max_records=20_000)
                for tp, records in batch.items():
                    for record in records:
                        if record.key is not None and record.value is not None:
                            found[tp.partition][record.key.decode()] = record.value
                    if records and records[-1].offset + 1 >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await reader.stop()
        return {p: {u: UserContext.from_bytes(v) for u, v in users.items()} for p, users in found.items()}
