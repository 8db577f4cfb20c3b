"""Kafka over TLS (mutual TLS included) and SASL, for real.

Tansu 0.6 (the local broker) serves neither usably: its ``--cert`` cannot be given with
``--key``, and its SASL handshake answers "unsupported mechanism" for every mechanism, the
SCRAM-SHA-512 it advertises included. So TLS is terminated by Debian's stunnel in front of
it (the broker advertises stunnel's port), with a CA made here; SASL is tested as far as the
broker allows: every client sends the configured mechanism, and the broker's refusal comes
back as a clear error naming it (the success path needs a SASL-capable broker; see
docs/deployment.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaError

from intentstream.deploy import stack
from intentstream.kafka import KafkaSecurity, KafkaSecurityError
from intentstream.perf.demo import start_worker, stop_worker
from intentstream.producer import IntentProducer
from intentstream.settings import Settings
from intentstream.stream.ingest import ContextService
from tests.helpers import consume, event_dict, isolated_settings, latest_contexts

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _signed(folder: Path, name: str, ca: str, *extra: str) -> tuple[Path, Path]:
    key, csr, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(folder / f"{ca}.pem"),
        "-CAkey", str(folder / f"{ca}.key"), "-CAcreateserial", "-out", str(cert), "-days", "2", *extra,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate signed by it, and a
    second CA that signed nothing here."""
    folder = tmp_path_factory.mktemp("pki")
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(folder / f"{ca}.key"),
            "-out", str(folder / f"{ca}.pem"), "-subj", f"/CN={ca}", "-days", "2",
        )  # fmt: skip
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _signed(folder, "broker", "ca", "-extfile", str(folder / "san.cnf"))
    _signed(folder, "client", "ca")
    return folder


@pytest.fixture(scope="module")
def tls_broker(pki: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[stack.Service]:
    """The broker reachable only through TLS, client certificates required (mutual TLS)."""
    home = tmp_path_factory.mktemp("tls-broker")
    broker, terminator = stack.start_tls_broker(
        home, pki / "broker.pem", pki / "broker.key", client_ca=pki / "ca.pem"
    )
    yield terminator
    stack.stop(terminator)
    stack.stop(broker)


def tls_settings(
    pki: Path, bootstrap: str, home: Path, *, ca: str = "ca", client: bool = True, **overrides: Any
) -> Settings:
    tls: dict[str, Any] = {
        "kafka_security_protocol": "SSL",
        "kafka_tls_ca_file": pki / f"{ca}.pem",
        "kafka_tls_cert_file": pki / "client.pem" if client else None,
        "kafka_tls_key_file": pki / "client.key" if client else None,
    }
    return isolated_settings(home, bootstrap, **{**tls, **overrides})


async def test_worker_and_producer_work_end_to_end_through_mutual_tls(
    pki: Path, tls_broker: stack.Service, tmp_path: Path
) -> None:
    settings = tls_settings(pki, tls_broker.address, tmp_path / "home")
    endpoints = stack.Endpoints(tls_broker.address, None, None)
    worker = start_worker(settings, endpoints, tmp_path / "worker.log", planner=False)
    try:
        async with IntentProducer(tls_broker.address, settings) as producer:
            await producer.send_events([event_dict(n, user="tls-user") for n in range(1, 4)])
        changelog = f"{settings.app_id}-contexts-changelog"
        records = await consume(
            tls_broker.address,
            changelog,
            until=lambda r: "tls-user" in latest_contexts(r) and latest_contexts(r)["tls-user"].version == 3,
            client_options=KafkaSecurity.from_settings(settings).options(),
        )
        assert latest_contexts(records)["tls-user"].counts == {"view": 3}
        assert worker.poll() is None
    finally:
        stop_worker(worker)
    log = (tmp_path / "worker.log").read_text()
    assert f"kafka {tls_broker.address} (SSL, CA {pki / 'ca.pem'}, client certificate)" in log


async def test_a_certificate_signed_by_another_ca_is_refused_with_a_clear_error(
    pki: Path, tls_broker: stack.Service, tmp_path: Path
) -> None:
    settings = tls_settings(pki, tls_broker.address, tmp_path, ca="other-ca")
    with pytest.raises(KafkaSecurityError, match=r"not trusted by .*other-ca\.pem"):
        async with IntentProducer(tls_broker.address, settings):
            pass
    with pytest.raises(KafkaSecurityError, match="not trusted"):
        await ContextService(settings, tls_broker.address, scan_end_offsets=True).start()


def test_the_worker_command_exits_with_the_reason_on_a_wrong_ca(
    pki: Path, tls_broker: stack.Service, tmp_path: Path
) -> None:
    settings = tls_settings(pki, tls_broker.address, tmp_path, ca="other-ca")
    env = {**os.environ, **settings.to_env()}
    done = subprocess.run(
        [sys.executable, "-m", "intentstream.cli", "worker", "--no-planner"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "not trusted by" in done.stderr + done.stdout


async def test_without_a_client_certificate_mutual_tls_refuses(
    pki: Path, tls_broker: stack.Service, tmp_path: Path
) -> None:
    settings = tls_settings(pki, tls_broker.address, tmp_path, client=False)
    with pytest.raises((KafkaSecurityError, KafkaError)):
        async with IntentProducer(tls_broker.address, settings):
            pass


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_every_client_sends_the_sasl_mechanism_and_a_refusal_is_explained(
    broker: stack.Service, tmp_path: Path, mechanism: str
) -> None:
    settings = Settings(
        home=tmp_path,
        kafka_bootstrap=broker.address,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="feed",
        kafka_sasl_password="s3cret-pass",
    )
    with pytest.raises(KafkaSecurityError, match=f"refused SASL {mechanism}") as caught:
        async with IntentProducer(broker.address, settings):
            pass
    assert "s3cret-pass" not in str(caught.value)
    assert "s3cret-pass" not in repr(settings) + KafkaSecurity.from_settings(settings).describe()


async def test_sasl_over_tls_reaches_the_broker_through_the_terminator(
    pki: Path, tls_broker: stack.Service, tmp_path: Path
) -> None:
    settings = tls_settings(
        pki,
        tls_broker.address,
        tmp_path,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="feed",
        kafka_sasl_password="pw",
    )
    with pytest.raises(KafkaSecurityError, match="refused SASL SCRAM-SHA-512"):
        async with IntentProducer(tls_broker.address, settings):
            pass
