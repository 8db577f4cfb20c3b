"""The Redis contract, kept true by a reader in a second language: ``tests/contract/reader.mjs``
(Node.js and the npm ``redis`` package) was written from docs/redis-contract.md alone. It reads
what the Python writer wrote, through the ACL users the page prescribes (taken from the page
itself), follows notifications without loss, and refuses the corrupt records the page lists."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
import redis

from intentstream.deploy import stack
from intentstream.reader import SyncIntentReader
from intentstream.schemas.record import Trigger
from intentstream.store import IntentStore, connect
from tests.helpers import NOW, REPO_ROOT, intent_record

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE = REPO_ROOT / "docs" / "redis-contract.md"
NOW_TEXT = NOW.isoformat().replace("+00:00", "Z")
READER = REPO_ROOT / "tests" / "contract" / "reader.mjs"
DB = 3  # not 0: the page's reader ACL must let a client SELECT its database
PASSWORDS = {"intent-writer": "writer-pass", "intent-reader": "reader-pass", "intent-group": "group-pass"}
# Ids whose length differs by language: 128 code points, but 256 UTF-16 units in JavaScript.
USERS = ["42", "用户-7", "👩‍💻" * 32, "a" * 128, "brace}{id"]


def page_acl() -> dict[str, list[str]]:
    """The ``ACL SETUSER`` lines of the page, by user, passwords filled in."""
    users = {}
    for line in PAGE.read_text().splitlines():
        if line.startswith("ACL SETUSER "):
            args = shlex.split(line)[2:]
            users[args[0]] = [f">{PASSWORDS[args[0]]}" if a.startswith(">") else a for a in args]
    return users


def node() -> str:
    found = shutil.which("node")
    if found is None or not (READER.parent / "node_modules" / "redis").is_dir():
        pytest.fail("Node.js and tests/contract/node_modules are installed by `make setup`")
    return found


def run_reader(*args: str) -> list[Any]:
    done = subprocess.run(
        [node(), str(READER), *args], capture_output=True, text=True, timeout=60, cwd=READER.parent
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def url(service: stack.Service, user: str) -> str:
    return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{service.port}/{DB}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Service]:
    service = stack.start_redis(tmp_path_factory.mktemp("contract"), password="admin-pass")
    admin = redis.Redis(port=service.port, password="admin-pass")
    for args in page_acl().values():
        admin.execute_command("ACL", "SETUSER", *args)  # type: ignore[no-untyped-call]
    admin.close()
    yield service
    stack.stop(service)


@pytest.fixture
def admin(server: stack.Service) -> Iterator[redis.Redis]:
    client = redis.Redis(port=server.port, password="admin-pass", db=DB)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
async def writer(server: stack.Service) -> AsyncIterator[IntentStore]:
    client = connect(url(server, "intent-writer"))
    yield IntentStore(client)
    await client.aclose()


def test_the_page_prescribes_a_writer_a_follower_and_a_group_reader() -> None:
    assert set(page_acl()) == set(PASSWORDS)


def test_the_page_lists_exactly_the_trigger_values() -> None:
    section = PAGE.read_text().split("### `trigger` values", 1)[1].split("\n#", 1)[0]
    listed = re.findall(r"^- `([^`]+)`", section, flags=re.MULTILINE)
    assert sorted(listed) == sorted(Trigger)


async def test_node_reads_what_python_wrote_with_the_reader_acl(
    server: stack.Service, admin: redis.Redis, writer: IntentStore
) -> None:
    written = await writer.write_many([intent_record(3, user) for user in USERS], NOW)
    assert all(written)
    lines = run_reader("get", url(server, "intent-reader"), "intent", *USERS, "nobody")
    plain, both = lines[: len(USERS) + 1], [line["both"] for line in lines[len(USERS) + 1 :]]
    for got in (plain, both):
        assert [g["user"] for g in got] == [*USERS, "nobody"]
        for user, g in zip(USERS, got, strict=False):
            assert "problem" not in g, g
            assert g["record"]["user_id"] == user
            assert g["record"]["version"] == 3
            assert g["record"]["tags"] == [
                {"tag": "tag v3", "explanation": "From context version 3.", "source": "llm"},
                {
                    "tag": "live entry",
                    "explanation": "Viewed twice.",
                    "source": "live",
                    "last_seen": NOW_TEXT,
                    "wording": "code",
                    "items": ["i7", "i3"],
                },
            ]
            assert g["record"]["co_viewed"] == ["i9", "i4"]
            assert g["record"]["category_popular"] == ["i5"]
        assert got[-1] == {"user": "nobody", "record": None}
    assert run_reader("ping", url(server, "intent-reader")) == ["PONG"]
    # The Python reader gets the same through the same ACL user.
    reader = SyncIntentReader.from_url(url(server, "intent-reader"))
    assert [bool(x) for x in reader.get_many(USERS)] == [True] * len(USERS)
    reader.close()


def corrupt_cases() -> dict[str, tuple[dict[str, Any] | bytes, str, str]]:
    """user -> (stored record, the hash's version field, words of the expected problem)."""
    good = orjson.loads(intent_record(2, "x").encode_written(NOW))

    def record(user: str, **changes: Any) -> dict[str, Any]:
        out = {**good, "user_id": user, **changes}
        return {k: v for k, v in out.items() if v is not None}

    return {
        "not-json": (b"{oops", "2", "not JSON"),
        "no-schema": (record("no-schema", schema_version=None), "2", "schema_version"),
        "future-schema": (record("future-schema", schema_version=2), "2", "schema_version"),
        "mismatch": (record("someone-else"), "2", "belongs to user"),
        "no-version": (record("no-version", version=None), "2", "version"),
        "text-version": (record("text-version", version="2"), "2", "version"),
        "no-tags": (record("no-tags", tags=[]), "2", "tags"),
        "bad-tag": (record("bad-tag", tags=[{"tag": 7}]), "2", "tag"),
        "long-tag": (record("long-tag", tags=[{"tag": "t" * 49, "explanation": "e."}]), "2", "tag"),
        "no-verdict": (record("no-verdict", verdict="great"), "2", "verdict"),
        "bad-source": (
            record("bad-source", tags=[{"tag": "t", "explanation": "e.", "source": "me"}]),
            "2",
            "source",
        ),
        "bad-wording": (
            record("bad-wording", tags=[{"tag": "t", "explanation": "e.", "wording": "model"}]),
            "2",
            "wording",
        ),
        "bad-seen": (
            record("bad-seen", tags=[{"tag": "t", "explanation": "e.", "last_seen": "now"}]),
            "2",
            "last_seen",
        ),
        "bad-items": (
            record("bad-items", tags=[{"tag": "t", "explanation": "e.", "items": ["ok", 7]}]),
            "2",
            "items",
        ),
        "too-many-items": (
            record(
                "too-many-items",
                tags=[{"tag": "t", "explanation": "e.", "items": [f"i{n}" for n in range(21)]}],
            ),
            "2",
            "items",
        ),
        "bad-co-viewed": (record("bad-co-viewed", co_viewed=["ok", ""]), "2", "co_viewed"),
        "too-many-co-viewed": (
            record("too-many-co-viewed", co_viewed=[f"i{n}" for n in range(51)]),
            "2",
            "co_viewed",
        ),
        "bad-category-popular": (
            record("bad-category-popular", category_popular=[7]),
            "2",
            "category_popular",
        ),
        "too-many-category-popular": (
            record("too-many-category-popular", category_popular=[f"i{n}" for n in range(51)]),
            "2",
            "category_popular",
        ),
        "bad-llm-version": (record("bad-llm-version", llm_context_version=0), "2", "llm_context_version"),
        "bad-time": (record("bad-time", planned_at="yesterday"), "2", "planned_at"),
        "versions-differ": (record("versions-differ"), "5", "version"),
    }


async def test_node_refuses_the_corrupt_records_the_page_describes(
    server: stack.Service, admin: redis.Redis
) -> None:
    cases = corrupt_cases()
    for user, (stored, version, _) in cases.items():
        raw = stored if isinstance(stored, bytes) else orjson.dumps(stored)
        admin.hset(f"intent:{{{user}}}", mapping={"version": version, "record": raw})
    lines = run_reader("get", url(server, "intent-reader"), "intent", *cases)
    plain = {line["user"]: line for line in lines[: len(cases)]}
    both = {line["both"]["user"]: line["both"] for line in lines[len(cases) :]}
    for user, (_, _, words) in cases.items():
        if user == "versions-differ":  # only a reader of both fields can tell (rule 9)
            assert "record" in plain[user]
            assert words in both[user]["problem"]
            continue
        assert words in plain[user].get("problem", ""), plain[user]
        assert words in both[user].get("problem", ""), both[user]
    # The Python reader (which reads only the record field) refuses the same ones.
    reader = SyncIntentReader.from_url(url(server, "intent-reader"))
    found = reader.get_many(list(cases))
    reader.close()
    refused = {lookup.user_id for lookup in found if lookup.problem}
    assert refused == set(cases) - {"versions-differ"}
    assert not any(lookup.record for lookup in found if lookup.user_id != "versions-differ")


@pytest.mark.parametrize("mode", ["follow", "group"])
async def test_node_follows_every_notification_across_many_writes(
    server: stack.Service, admin: redis.Redis, writer: IntentStore, mode: str
) -> None:
    admin.xadd("intent:changes", {"user": "before", "version": 1})  # the group needs the stream
    users, versions = [f"f{i}" for i in range(40)], 5
    count = len(users) * versions
    user = "intent-reader" if mode == "follow" else "intent-group"
    extra = ["feeds"] if mode == "group" else []
    proc = await asyncio.create_subprocess_exec(
        node(), str(READER), mode, url(server, user), "intent:changes", *extra, str(count),
        cwd=READER.parent, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert json.loads(await asyncio.wait_for(proc.stdout.readline(), 30)) == "ready"
    for version in range(1, versions + 1):  # one write at a time, many while the reader is mid-read
        for u in users:
            await writer.write(intent_record(version, u), NOW)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    got = [json.loads(line) for line in out.decode().splitlines()]
    assert len(got) == count
    for u in users:
        assert [g["version"] for g in got if g["user"] == u] == list(range(1, versions + 1))
