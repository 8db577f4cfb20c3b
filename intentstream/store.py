"""The Redis intent store: versioned, atomic, monotonic writes and typed reads.

Key layout (the contract feed servers read; see docs/redis-contract.md):

* ``{prefix}:{{{user_id}}}`` — a hash with ``version`` (decimal integer) and ``record``
  (UTF-8 JSON of :class:`schemas.record.IntentRecord`), expiring after ``ttl_s``; and, for
  the writers only, ``context_version`` (the record's) and ``plan`` (UTF-8 JSON of the
  user's newest :class:`schemas.record.LLMPlan`).
* ``{changes_stream}`` — a capped stream; each accepted write appends ``user`` and ``version``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from intentstream.schemas.record import IntentRecord, LLMPlan
from intentstream.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Whole record or nothing, and never older over newer: one script, run atomically by Redis.
# It takes any number of users so a batch costs one command, not one per user.
# KEYS: the users' hashes..., then the changes stream.
# ARGV: ttl_ms, stream maxlen, then (version, record JSON, user id, context version, plan
# JSON or "") per user. Returns one 1 (written) or 0 (a newer or equal version is there)
# per user.
_WRITE_IF_NEWER = """
local stream = KEYS[#KEYS]
local ttl, maxlen = ARGV[1], ARGV[2]
local written = {}
for i = 1, #KEYS - 1 do
  local at = 5 * i - 2
  local version, record, user = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local current = redis.call('HGET', KEYS[i], 'version')
  if current and tonumber(current) >= tonumber(version) then
    written[i] = 0
  else
    redis.call('HSET', KEYS[i], 'version', version, 'record', record, 'context_version', ARGV[at + 3])
    if ARGV[at + 4] ~= '' then
      redis.call('HSET', KEYS[i], 'plan', ARGV[at + 4])
    end
    redis.call('PEXPIRE', KEYS[i], ttl)
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'user', user, 'version', version,
               'context_version', ARGV[at + 3])
    written[i] = 1
  end
end
return written
"""


# Cluster mode: a script may only touch keys of one slot, so the record is written by this
# one-key script and the notification follows as a separate command (see docs).
_WRITE_ONE_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'version')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'record', ARGV[2], 'context_version', ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'plan', ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

RedisClient = aioredis.Redis | aioredis.RedisCluster


def auth_options(
    *, username: str | None = None, password: str | None = None, tls_ca_file: Path | None = None
) -> dict[str, Any]:
    """redis-py connection options for AUTH/ACL credentials and a TLS CA file (set ones only)."""
    options: dict[str, Any] = {"username": username, "password": password}
    if tls_ca_file is not None:
        options["ssl_ca_certs"] = str(tls_ca_file)
    return {k: v for k, v in options.items() if v is not None}


def connect(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    tls_ca_file: Path | None = None,
    max_connections: int = 64,
    cluster: bool = False,
) -> RedisClient:
    """A client that waits for a free connection under bursts (a Redis Cluster client when
    ``cluster``: it follows slot moves and splits pipelines by node).
    ``username``/``password`` (Redis ACL/AUTH) override the URL's; TLS comes with rediss://."""
    options = auth_options(username=username, password=password, tls_ca_file=tls_ca_file)
    if cluster:
        return aioredis.RedisCluster.from_url(url, max_connections=max_connections, **options)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=30,
        # One quick retry replaces a pooled connection the server dropped. Longer outages are
        # the store's to ride out (IntentStore.retry_for_s): redis-py nests its connection and
        # command retries, so a larger count here multiplies.
        retry=Retry(NoBackoff(), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
        **options,
    )
    return aioredis.Redis(connection_pool=pool)


def connect_with(settings: Settings, url: str) -> RedisClient:
    """:func:`connect` with the credentials, TLS and cluster options of ``settings``."""
    return connect(
        url,
        username=settings.redis_username,
        password=settings.redis_password,
        tls_ca_file=settings.redis_tls_ca_file,
        cluster=settings.redis_cluster,
    )


def changes_streams(stream: str, client: RedisClient, shards: int) -> list[str]:
    """The change-notification streams: one on a single server; ``shards`` on a cluster,
    each hash-tagged into its own slot (``intent:changes:{s0}`` …)."""
    if isinstance(client, aioredis.RedisCluster):
        return [f"{stream}:{{s{i}}}" for i in range(shards)]
    return [stream]


def shard_of(user_id: str, shards: int) -> int:
    """Which change stream a user's notifications go to on a cluster: CRC-32 (IEEE) of the
    UTF-8 user id, modulo the shard count."""
    return zlib.crc32(user_id.encode()) % shards


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


class CorruptRecord(ValueError):
    """The value stored for a user is not a record this reader understands."""

    def __init__(self, user_id: str, detail: str) -> None:
        super().__init__(f"corrupt intent record for user {user_id}: {detail}")
        self.user_id = user_id


def record_key(prefix: str, user_id: str) -> str:
    """The user's hash. The braces are a Redis Cluster hash tag: all of one user's keys
    share a slot."""
    return f"{prefix}:{{{user_id}}}"


def parse_record(user_id: str, raw: bytes | str) -> IntentRecord:
    """Decode a stored record; :class:`CorruptRecord` says what is wrong with it."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptRecord(user_id, f"not JSON: {exc}"[:200]) from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise CorruptRecord(user_id, "not a JSON object with a schema_version")
    try:  # strict: "3" is not a version, as it is not in any other language's reader
        record = IntentRecord.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise CorruptRecord(user_id, str(exc)[:200]) from None
    stored = [(t.get("tag"), t.get("explanation")) for t in data["tags"]]
    if stored != [(t.tag, t.explanation) for t in record.tags]:  # cleaning changed them
        raise CorruptRecord(user_id, "a tag or explanation is not plain text within its limits")
    if record.user_id != user_id:
        raise CorruptRecord(user_id, f"record belongs to user {record.user_id}")
    return record


@dataclass(frozen=True, slots=True)
class Stored:
    """What the writers need to know of a user's hash before writing a new version."""

    version: int  # 0: no record
    context_version: int  # of the stored record; 0: none, or written before it was kept
    plan: LLMPlan | None  # the newest LLM plan
    record: bytes | None = None  # the record's JSON, when asked for

    @property
    def plan_version(self) -> int:
        """The context version the newest LLM plan was made from; 0: none."""
        return self.plan.context_version if self.plan else 0


class IntentStore:
    """Writes and reads per-user intent records in Redis."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "intent",
        ttl_s: int = 7 * 24 * 3600,
        changes_stream: str = "intent:changes",
        changes_maxlen: int = 100_000,
        retry_for_s: float = 30.0,
        changes_shards: int = 16,
    ) -> None:
        self.client = client
        self.retry_for_s = retry_for_s
        self.changes_shards = changes_shards
        self.cluster = isinstance(client, aioredis.RedisCluster)
        self.prefix = prefix
        self.ttl_ms = ttl_s * 1000
        self.changes_stream = changes_stream
        self.changes_maxlen = changes_maxlen
        self._write_if_newer = None if self.cluster else client.register_script(_WRITE_IF_NEWER)

    @classmethod
    def from_settings(cls, client: RedisClient, settings: Settings) -> IntentStore:
        return cls(
            client,
            prefix=settings.redis_key_prefix,
            ttl_s=settings.record_ttl_s,
            changes_stream=settings.changes_stream,
            changes_maxlen=settings.changes_maxlen,
            changes_shards=settings.changes_shards,
        )

    def key(self, user_id: str) -> str:
        return record_key(self.prefix, user_id)

    async def notifications(self) -> int:
        """How many change notifications the streams hold."""
        streams = changes_streams(self.changes_stream, self.client, self.changes_shards)
        return sum([await self.client.xlen(stream) for stream in streams])

    async def write(self, record: IntentRecord, now: datetime, plan: LLMPlan | None = None) -> bool:
        """Write ``record`` (and ``plan``, the LLM plan behind it, when given) if its version
        is newer than the stored one. Returns whether it was written (False: a newer or
        equal version is already there)."""
        return (await self.write_many([record], now, plans=[plan]))[0]

    async def write_many(
        self,
        records: list[IntentRecord],
        now: datetime,
        *,
        plans: list[LLMPlan | None] | None = None,
        batch: int = 500,
    ) -> list[bool]:
        """Write many records, ``batch`` to a script call; each is still all-or-nothing and
        only-if-newer on its own. ``plans`` (one per record, or None) are the LLM plans to
        keep beside them; None keeps the stored one. Returns, per record, whether it was
        written."""
        kept = plans if plans is not None else [None] * len(records)
        if len(kept) != len(records):
            raise ValueError(f"{len(records)} records but {len(kept)} plans")
        written: list[bool] = []
        encoded = [
            (r, r.encode_written(now), p.model_dump_json().encode() if p else b"")
            for r, p in zip(records, kept, strict=True)
        ]
        for start in range(0, len(encoded), batch):
            chunk = encoded[start : start + batch]
            write = self._write_cluster if self.cluster else self._write_single
            written += await self._retrying(functools.partial(write, chunk))
        return written

    async def _write_single(self, chunk: list[tuple[IntentRecord, bytes, bytes]]) -> list[bool]:
        """One script call writes the whole chunk and its notifications atomically."""
        assert self._write_if_newer is not None
        keys = [self.key(r.user_id) for r, _, _ in chunk]
        keys.append(self.changes_stream)
        args: list[str | int | bytes] = [self.ttl_ms, self.changes_maxlen]
        for record, raw, plan in chunk:
            args += [record.version, raw, record.user_id, record.context_version, plan]
        return [bool(flag) for flag in await self._write_if_newer(keys=keys, args=args)]

    async def _write_cluster(self, chunk: list[tuple[IntentRecord, bytes, bytes]]) -> list[bool]:
        """One one-key script per user (pipelined by node), then the notifications of the
        accepted writes to their shard streams."""
        async with self.client.pipeline(transaction=False) as pipe:
            for record, raw, plan in chunk:
                pipe.eval(
                    _WRITE_ONE_IF_NEWER, 1, self.key(record.user_id),
                    record.version, raw, self.ttl_ms, record.context_version, plan,
                )  # fmt: skip
            flags = [bool(flag) for flag in await pipe.execute()]
        accepted = [r for (r, _, _), ok in zip(chunk, flags, strict=True) if ok]
        if accepted:
            streams = changes_streams(self.changes_stream, self.client, self.changes_shards)
            async with self.client.pipeline(transaction=False) as pipe:
                for record in accepted:
                    stream = streams[shard_of(record.user_id, self.changes_shards)]
                    pipe.xadd(
                        stream,
                        {
                            "user": record.user_id,
                            "version": record.version,
                            "context_version": record.context_version,
                        },
                        maxlen=self.changes_maxlen,
                        approximate=True,
                    )
                await pipe.execute()
        return flags

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """Ride out a Redis outage of up to ``retry_for_s`` (a restart, a failover) instead of
        dropping a write. Safe: the script only writes what is newer, so a repeat is a no-op.
        Wrong credentials are not an outage and fail at once."""
        delay, deadline = 0.05, time.monotonic() + self.retry_for_s
        while True:
            try:
                return await call()
            except AuthenticationError:
                raise
            except (RedisConnectionError, RedisTimeoutError) as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("Redis unavailable (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def states(self, users: list[str], *, records: bool = False) -> list[Stored]:
        """Per user, the stored version, the record's context version and the newest LLM
        plan (and the record itself when ``records``): one pipelined round trip. A plan that
        does not parse counts as none (logged): the next plan replaces it."""
        fields = ["version", "context_version", "plan"] + (["record"] if records else [])

        async def read() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                for user in users:
                    pipe.hmget(self.key(user), fields)
                return list(await pipe.execute())

        found = []
        for user, values in zip(users, await self._retrying(read), strict=True):
            version, context_version, raw_plan = values[0], values[1], values[2]
            plan = None
            if raw_plan:
                try:
                    plan = LLMPlan.model_validate_json(raw_plan)
                except ValidationError as exc:
                    log.warning("user %r: stored plan does not parse, ignored: %s", user, str(exc)[:200])
            found.append(
                Stored(int(version or 0), int(context_version or 0), plan, values[3] if records else None)
            )
        return found

    async def version(self, user_id: str) -> int:
        """The stored plan version for ``user_id``; 0 when there is none."""
        raw = await self.client.hget(self.key(user_id), "version")
        return int(raw) if raw is not None else 0

    async def get(self, user_id: str) -> IntentRecord | None:
        """The user's current record, or None when there is none (never written or expired)."""
        raw = await self.client.hget(self.key(user_id), "record")
        return None if raw is None else parse_record(user_id, raw)
