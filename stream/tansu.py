"""Compatibility with the Tansu broker of the local stack.

Tansu 0.6 answers ListOffsets "latest" with the base offset of a partition's last record
batch, not the offset after its last record. faust rebuilds tables from their changelogs up
to that "highwater", so after a restart it would stop before the newest context writes and
lose them. With the patch below, a worker finds each changelog's true end by reading
forward from the reported one. Real Kafka needs none of this: it is only applied when the
worker runs on the local stack (or INTENTSTREAM_SCAN_END_OFFSETS=true says so).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger(__name__)


async def scanned_end_offsets(
    bootstrap: str,
    partitions: Sequence[TopicPartition],
    reported: Mapping[TopicPartition, int],
    client_options: Mapping[str, Any] | None = None,
) -> dict[TopicPartition, int]:
    """The offset after each partition's last record, read forward from ``reported``."""
    ends = {tp: reported.get(tp) or 0 for tp in partitions}
    if not partitions:
        return ends
    scout = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **(client_options or {})
    )
    await scout.start()
    try:
        scout.assign(list(partitions))
        for tp in partitions:
            scout.seek(tp, ends[tp])
        while True:
            batch = await scout.getmany(timeout_ms=300, max_records=10_000)
            if not any(batch.values()):
                return ends
            for tp, records in batch.items():
                ends[tp] = max(ends[tp], records[-1].offset + 1)
    finally:
        await scout.stop()


def patch_faust_highwaters(bootstrap: str, client_options: Mapping[str, Any] | None = None) -> None:
    """Make faust's recovery use :func:`scanned_end_offsets`."""
    from faust.transport.drivers import aiokafka as driver

    original = driver.AIOKafkaConsumerThread._highwaters

    async def _highwaters(self: Any, partitions: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        reported = await original(self, partitions)
        if self.consumer.in_transaction:
            return reported
        ends = await scanned_end_offsets(bootstrap, partitions, reported, client_options)
        moved = {tp: (reported.get(tp), end) for tp, end in ends.items() if end != reported.get(tp)}
        if moved:
            log.info("end offsets corrected by scanning (reported, true): %s", moved)
        return ends

    driver.AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]
