"""AUTH (ACL users and passwords) and TLS on a local redis-server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import AuthenticationError, ConnectionError, ResponseError

from intentstream.deploy import stack
from intentstream.reader import IntentReader, SyncIntentReader
from intentstream.settings import Settings
from intentstream.store import IntentStore, connect, connect_with, redacted
from tests.helpers import NOW
from tests.helpers import intent_record as record

pytestmark = pytest.mark.integration

ACL_USER = ["--user", "feed", "on", ">feed-pass", "~intent:*", "&*", "+@all"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-subj", "/CN=localhost", "-days", "1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[stack.Service]:
    service = stack.start_redis(tmp_path, password="default-pass", extra_args=ACL_USER)
    yield service
    stack.stop(service)


async def test_acl_user_from_settings_can_write_and_read(secured: stack.Service) -> None:
    settings = Settings(redis_username="feed", redis_password="feed-pass")
    client = connect_with(settings, secured.address)
    try:
        assert await IntentStore(client).write(record(1), NOW)
        assert (await IntentReader(client).get("u1")).tags[0].tag == "tag v1"
    finally:
        await client.aclose()


async def test_credentials_in_the_url_work_and_are_redacted_in_logs(secured: stack.Service) -> None:
    url = f"redis://feed:feed-pass@127.0.0.1:{secured.port}/0"
    assert "feed-pass" not in redacted(url)
    assert "feed:***@" in redacted(url)
    reader = SyncIntentReader.from_url(url)
    try:
        assert not reader.get("nobody")
    finally:
        reader.close()


async def test_missing_or_wrong_password_is_refused(secured: stack.Service) -> None:
    for client in (connect(secured.address), connect(secured.address, username="feed", password="wrong")):
        with pytest.raises((AuthenticationError, ResponseError)):
            await IntentStore(client).write(record(1), NOW)
        await client.aclose()


async def test_tls_with_the_ca_file(tmp_path: Path, certificate: tuple[Path, Path]) -> None:
    server = stack.start_redis(tmp_path, tls=certificate)
    try:
        assert server.address.startswith("rediss://")
        client = connect(server.address, tls_ca_file=certificate[0])
        assert await IntentStore(client).write(record(2), NOW)
        assert (await IntentReader(client).get("u1")).record is not None
        await client.aclose()
        plain = connect(server.address.replace("rediss://", "redis://"))
        with pytest.raises(ConnectionError):
            await plain.ping()
        await plain.aclose()
    finally:
        stack.stop(server)
