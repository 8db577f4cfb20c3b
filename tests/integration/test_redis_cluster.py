"""The store and the reader on a real local Redis Cluster (three primaries)."""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from intentstream.deploy import stack
from intentstream.reader import IntentReader
from intentstream.store import IntentStore, RedisClient, changes_streams, connect, shard_of
from tests.helpers import NOW
from tests.helpers import intent_record as record

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[stack.Service]]:
    nodes = stack.start_redis_cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    for node in nodes:
        stack.stop(node)


@pytest.fixture
async def cluster_client(cluster: list[stack.Service]) -> AsyncIterator[RedisClient]:
    client = connect(cluster[0].address, cluster=True)
    await client.flushall()
    yield client
    await client.aclose()


def keyslot(port: int, key: str) -> int:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "keyslot", key], capture_output=True, text=True
    )
    return int(out.stdout)


def test_one_users_keys_share_a_slot(cluster: list[stack.Service]) -> None:
    port = cluster[0].port
    assert keyslot(port, "intent:{42}") == keyslot(port, "42") == keyslot(port, "other:{42}:x")
    streams = [f"intent:changes:{{s{i}}}" for i in range(16)]
    assert len({keyslot(port, s) for s in streams}) == 16  # shard streams spread over slots


async def test_writes_and_reads_across_nodes(cluster_client: RedisClient) -> None:
    store, reader = IntentStore(cluster_client), IntentReader(cluster_client)
    users = [f"c{i}" for i in range(300)]  # spread over all three primaries
    assert all(await store.write_many([record(2, u) for u in users], NOW))
    found = await reader.get_many(users)
    assert [f.record.version if f.record else None for f in found] == [2] * len(users)
    assert (await reader.get("c7")).tags[0].tag == "tag v2"
    assert not await reader.get("nobody")


async def test_stale_plans_never_overwrite_newer_on_a_cluster(cluster_client: RedisClient) -> None:
    store = IntentStore(cluster_client)
    work = [(f"m{i}", v) for i in range(30) for v in range(1, 21)]
    random.Random(5).shuffle(work)
    await asyncio.gather(*(store.write_many([record(v, u) for u, v in work[i::4]], NOW) for i in range(4)))
    assert {await store.version(f"m{i}") for i in range(30)} == {20}


async def test_accepted_writes_notify_on_their_shard_stream(cluster_client: RedisClient) -> None:
    store, reader = IntentStore(cluster_client), IntentReader(cluster_client)
    await store.write_many([record(3, "n1"), record(1, "n2")], NOW)
    await store.write(record(2, "n1"), NOW)  # stale: no notification
    streams = changes_streams("intent:changes", cluster_client, 16)
    assert await cluster_client.xlen(streams[shard_of("n1", 16)]) >= 1
    received = []

    async def listen() -> None:
        async for change in reader.changes("0", poll_s=0.05):
            received.append((change.user_id, change.version))
            if len(received) == 2:
                return

    await asyncio.wait_for(listen(), 10)
    assert sorted(received) == [("n1", 3), ("n2", 1)]
