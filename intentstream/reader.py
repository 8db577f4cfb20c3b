"""The reader client for feed servers (asyncio and blocking): one user, many users in one
round trip, and change notifications. A missing or expired user is an explicit empty
result; a corrupt stored value is reported on that user's result, never raised, so one bad
key cannot take a feed request down.

    reader = IntentReader.from_url("redis://127.0.0.1:6379/0")
    found = await reader.get("42")
    if found:
        print([t.tag for t in found.tags])
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from intentstream.schemas.record import IntentRecord, IntentTag
from intentstream.store import (
    CorruptRecord,
    RedisClient,
    auth_options,
    changes_streams,
    connect,
    parse_record,
    record_key,
)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What Redis holds for one user: a record, nothing, or a problem reading it."""

    user_id: str
    record: IntentRecord | None = None
    problem: str | None = None  # why a stored value could not be read

    def __bool__(self) -> bool:
        return self.record is not None

    @property
    def tags(self) -> list[IntentTag]:
        return list(self.record.tags) if self.record else []

    def items(self, n: int) -> list[str]:
        """Up to ``n`` item ids for a feed: the tags' catalog items in turn by rank, the
        strongest tag first, in turn with the items co-viewed with the user's last ones and
        the most popular of their latest category (``IntentRecord.items``); none without a
        record."""
        return self.record.items(n) if self.record else []


@dataclass(frozen=True, slots=True)
class Change:
    """One accepted write, from the changes stream."""

    stream_id: str
    user_id: str
    version: int
    context_version: int | None = None  # absent in entries written before it was added


def _lookup(user_id: str, raw: bytes | str | None) -> Lookup:
    if raw is None:
        return Lookup(user_id)
    try:
        return Lookup(user_id, parse_record(user_id, raw))
    except CorruptRecord as exc:
        return Lookup(user_id, problem=str(exc))


def _changes(reply: Any) -> tuple[list[Change], str | None]:
    """Changes from an XREAD reply (``[[stream, [(id, fields), ...]], ...]`` or None), and
    the last entry id read (entries that are not ours are skipped but still read past)."""
    out, last = [], None
    for _stream, entries in reply or []:
        for stream_id, fields in entries:
            last = stream_id.decode()
            try:
                seen = fields.get(b"context_version")
                out.append(
                    Change(
                        last,
                        fields[b"user"].decode(),
                        int(fields[b"version"]),
                        int(seen) if seen is not None else None,
                    )
                )
            except (KeyError, ValueError, UnicodeDecodeError):
                continue  # not ours: someone else wrote to the stream
    return out, last


class _Layout:
    """Where the records and notifications live (docs/redis-contract.md)."""

    def __init__(self, *, prefix: str = "intent", changes_stream: str = "intent:changes") -> None:
        self.prefix = prefix
        self.changes_stream = changes_stream


class IntentReader(_Layout):
    """asyncio reader (a single server or a Redis Cluster)."""

    def __init__(self, client: RedisClient, **layout: str) -> None:
        super().__init__(**layout)
        self.client = client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "intent",
        changes_stream: str = "intent:changes",
        username: str | None = None,
        password: str | None = None,
        tls_ca_file: Path | None = None,
    ) -> IntentReader:
        """A reader on ``url`` (rediss:// for TLS; credentials override the URL's)."""
        client = connect(url, username=username, password=password, tls_ca_file=tls_ca_file)
        return cls(client, prefix=prefix, changes_stream=changes_stream)

    async def get(self, user_id: str) -> Lookup:
        """One user's intents; an empty :class:`Lookup` when there are none."""
        return _lookup(user_id, await self.client.hget(record_key(self.prefix, user_id), "record"))

    async def items(self, user_id: str, n: int) -> list[str]:
        """Up to ``n`` item ids to show ``user_id`` (one round trip; ``Lookup.items``)."""
        return (await self.get(user_id)).items(n)

    async def get_many(self, user_ids: Sequence[str]) -> list[Lookup]:
        """Many users in one round trip, in the order asked."""
        async with self.client.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hget(record_key(self.prefix, user_id), "record")
            raws = await pipe.execute()
        return [_lookup(u, raw) for u, raw in zip(user_ids, raws, strict=True)]

    async def changes(
        self, since: str = "$", *, block_ms: int = 5000, shards: int = 16, poll_s: float = 0.2
    ) -> AsyncIterator[Change]:
        """Accepted writes after ``since`` ("$": from now on; "0": from the oldest kept).
        On a cluster the ``shards`` change streams are polled in turn: each user's changes
        come in order, different users' in no set order."""
        streams = changes_streams(self.changes_stream, self.client, shards)
        if len(streams) == 1:
            last = since
            while True:
                reply = await self.client.xread({streams[0]: last}, block=block_ms, count=500)
                changes, last_read = _changes(reply)
                last = last_read or last
                for change in changes:
                    yield change
        positions = {stream: since for stream in streams}
        if since == "$":  # "$" only means "from now" to a blocking read: pin it per stream
            for stream in streams:
                newest: Any = await self.client.xrevrange(stream, count=1)
                positions[stream] = newest[0][0].decode() if newest else "0"
        while True:
            quiet = True
            for stream in streams:
                changes, last_read = _changes(await self.client.xread({stream: positions[stream]}, count=500))
                positions[stream] = last_read or positions[stream]
                for change in changes:
                    quiet = False
                    yield change
            if quiet:
                await asyncio.sleep(poll_s)

    async def aclose(self) -> None:
        await self.client.aclose()


class SyncIntentReader(_Layout):
    """Blocking reader, for feed servers without an event loop (a single server)."""

    def __init__(self, client: redis.Redis, **layout: str) -> None:
        super().__init__(**layout)
        self.client = client

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "intent",
        changes_stream: str = "intent:changes",
        username: str | None = None,
        password: str | None = None,
        tls_ca_file: Path | None = None,
    ) -> SyncIntentReader:
        options = auth_options(username=username, password=password, tls_ca_file=tls_ca_file)
        client = redis.Redis.from_url(url, **options)
        return cls(client, prefix=prefix, changes_stream=changes_stream)

    def get(self, user_id: str) -> Lookup:
        return _lookup(user_id, self.client.hget(record_key(self.prefix, user_id), "record"))

    def items(self, user_id: str, n: int) -> list[str]:
        return self.get(user_id).items(n)

    def get_many(self, user_ids: Sequence[str]) -> list[Lookup]:
        with self.client.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.hget(record_key(self.prefix, user_id), "record")
            raws = pipe.execute()
        return [_lookup(u, raw) for u, raw in zip(user_ids, raws, strict=True)]

    def changes_since(
        self, since: str = "0", *, block_ms: int | None = None, count: int = 500
    ) -> list[Change]:
        """The accepted writes after ``since`` (waits up to ``block_ms`` for the first)."""
        return _changes(self.client.xread({self.changes_stream: since}, block=block_ms, count=count))[0]

    def close(self) -> None:
        self.client.close()
