"""The app's Kafka topics, created up front with the right partition counts.

Created before faust starts (and before any producer sends) so that nothing, such as a
broker that auto-creates topics on a metadata request, can create them with another
partition count: the behaviours topic, the replans topic and the contexts changelog must be
co-partitioned (same count, keyed by user).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from intentstream.kafka import KafkaSecurity, start_client
from intentstream.settings import Settings


class TopologyError(RuntimeError):
    """An existing topic's layout contradicts the settings."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic the app reads or writes, with its partition count."""
    n = settings.topic_partitions
    return [
        TopicSpec(settings.topic_behaviors, n),
        TopicSpec(settings.topic_signals, n),
        TopicSpec(settings.topic_replans, n),
        TopicSpec(settings.topic_dead_letters, n),
        TopicSpec(f"{settings.app_id}-contexts-changelog", n, compacted=True),
        TopicSpec(f"{settings.app_id}-signals-changelog", n, compacted=True),
    ]


async def ensure_topics(bootstrap: str, settings: Settings) -> None:
    """Create missing topics; refuse to go on when an existing one has another partition
    count (co-partitioning would silently break)."""
    security = KafkaSecurity.from_settings(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **security.options())
    await start_client(admin, bootstrap, security)
    try:
        specs = topic_specs(settings)
        # Listing all topics (not naming them) never makes the broker auto-create one.
        existing = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
        for spec in specs:
            found = existing.get(spec.name)
            if found is not None and found != spec.partitions:
                raise TopologyError(
                    f"topic {spec.name!r} has {found} partitions but INTENTSTREAM_TOPIC_PARTITIONS="
                    f"{spec.partitions}; use the topic's count or a new app id and topic names"
                )
        missing = [
            NewTopic(
                s.name, s.partitions, 1, topic_configs={"cleanup.policy": "compact"} if s.compacted else {}
            )
            for s in specs
            if s.name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                await admin.create_topics(missing)
    finally:
        await admin.close()
