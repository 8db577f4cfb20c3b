"""The producer client for event publishers: validates behaviours and signals, publishes
them keyed by user id (signals by region), batches, and confirms delivery.

    async with IntentProducer("127.0.0.1:9092") as producer:
        await producer.send_events(events)        # waits until the broker has them all
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable
from types import TracebackType
from typing import Any, Self, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from pydantic import BaseModel, ValidationError

from intentstream.kafka import KafkaSecurity, start_client
from intentstream.schemas.codec import InvalidMessage, encode
from intentstream.schemas.events import BehaviorEvent, EnvSignal
from intentstream.settings import Settings, get_settings
from intentstream.stream.topics import ensure_topics

M = TypeVar("M", bound=BaseModel)


def _validated(model: type[M], message: M | dict[str, Any]) -> M:
    if isinstance(message, model):
        return message
    try:
        return model.model_validate(message)
    except ValidationError as exc:
        raise InvalidMessage("invalid_fields", str(exc)[:500]) from None


class IntentProducer:
    """Publishes validated messages; ``send_*`` return once the broker acknowledged them."""

    def __init__(self, bootstrap: str, settings: Settings | None = None, *, batch: int = 5000) -> None:
        self.settings = settings or get_settings()
        self.bootstrap = bootstrap
        self.batch = batch
        self.security = KafkaSecurity.from_settings(self.settings)
        self._producer: AIOKafkaProducer

    async def __aenter__(self) -> Self:
        await ensure_topics(self.bootstrap, self.settings)
        # Tansu rejects idempotent producers (InitProducerId); acks=all still confirms delivery.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
            max_batch_size=256 * 1024,
            **self.security.options(),
        )
        await start_client(self._producer, self.bootstrap, self.security)
        return self

    async def __aexit__(self, *exc: object | TracebackType) -> None:
        await self._producer.stop()

    def _bytes(self, message: BaseModel) -> bytes:
        value = encode(message)
        if len(value) > self.settings.max_event_bytes:
            raise InvalidMessage("oversized", f"{len(value)} bytes > limit {self.settings.max_event_bytes}")
        return value

    async def send_event(self, event: BehaviorEvent | dict[str, Any]) -> None:
        await self.send_events([event])

    async def send_signal(self, signal: EnvSignal | dict[str, Any]) -> None:
        valid = _validated(EnvSignal, signal)
        key = (valid.region or valid.segment or "*").encode()
        await (await self._producer.send(self.settings.topic_signals, self._bytes(valid), key=key))

    async def send_events(
        self, events: Iterable[BehaviorEvent | dict[str, Any]] | AsyncIterable[BehaviorEvent]
    ) -> int:
        """Validate and publish ``events`` in order per user; returns how many were confirmed.
        Raises :class:`InvalidMessage` on the first invalid event (nothing after it is sent)."""
        pending: list[asyncio.Future[Any]] = []
        sent = 0

        async def confirm() -> int:
            done = len(pending)
            await asyncio.gather(*pending)
            pending.clear()
            return done

        async def publish(event: BehaviorEvent | dict[str, Any]) -> None:
            nonlocal sent
            valid = _validated(BehaviorEvent, event)
            pending.append(
                await self._producer.send(
                    self.settings.topic_behaviors, self._bytes(valid), key=valid.user_id.encode()
                )
            )
            if len(pending) >= self.batch:
                sent += await confirm()

        if isinstance(events, AsyncIterable):
            async for item in events:
                await publish(item)
        else:
            for message in events:
                await publish(message)
        return sent + await confirm()

    async def send_encoded(self, messages: Iterable[tuple[bytes, bytes]], topic: str | None = None) -> int:
        """Publish already-encoded behaviours, ``(user id, JSON)`` pairs, in per-partition
        batches (no per-message future: the fast path for replaying files). Partitions are
        chosen as ``send`` chooses them, and each partition's batches go out in order, so
        per-user order holds. Returns how many the broker confirmed. The worker validates
        every message and dead-letters what is invalid; this checks only the size."""
        topic = topic or self.settings.topic_behaviors
        producer = self._producer
        partitions = sorted(await producer.partitions_for(topic))
        partition_of = DefaultPartitioner()
        batches: dict[int, Any] = {}
        counts: dict[int, int] = {}
        pending: list[tuple[asyncio.Future[Any], int]] = []
        sent = 0

        async def flush(partition: int) -> None:
            pending.append(
                (
                    await producer.send_batch(batches.pop(partition), topic, partition=partition),
                    counts.pop(partition),
                )
            )

        for key, value in messages:
            if len(value) > self.settings.max_event_bytes:
                raise InvalidMessage(
                    "oversized", f"{len(value)} bytes > limit {self.settings.max_event_bytes}"
                )
            partition = partition_of(key, partitions, partitions)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start anew
                await flush(partition)
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any message
            counts[partition] = counts.get(partition, 0) + 1
            if len(pending) >= 64:
                future, n = pending.pop(0)
                await future
                sent += n
        for partition in list(batches):
            await flush(partition)
        for future, n in pending:
            await future
            sent += n
        return sent

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Publish bytes as they are (for tools and tests that need malformed input)."""
        await (await self._producer.send(topic, value, key=key))
