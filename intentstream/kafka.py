"""How every Kafka client the project makes connects: TLS and SASL from the settings.

    security = KafkaSecurity.from_settings(settings)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **security.options())
    await start_client(producer, bootstrap, security)   # a clear error, not "Unable to bootstrap"

The worker's own consumers and producers, its faust app, the producer client, ``replay``,
the benchmarks and the topic set-up all take their options from here, so a cluster that
needs TLS (a CA, or client certificates for mutual TLS) and SASL (PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512) is one set of settings. Passwords never reach a log: they are ``SecretStr``
in the settings and ``describe()`` names only the user.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaConnectionError, KafkaError
from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from intentstream.settings import Settings


class KafkaSecurityError(RuntimeError):
    """The Kafka connection's security cannot work as configured (a file missing, a
    certificate not trusted, a SASL mechanism the broker refused)."""


@dataclass(frozen=True)
class KafkaSecurity:
    """The security of the connection to the brokers, as the settings describe it."""

    protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    ssl_context: ssl.SSLContext | None = None
    ca_file: Path | None = None
    client_cert: bool = False
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaSecurity:
        """Build (and check) the TLS context and SASL credentials the settings ask for."""
        protocol = settings.kafka_security_protocol
        context = _tls_context(settings) if protocol in ("SSL", "SASL_SSL") else None
        sasl = protocol.startswith("SASL_")
        password = settings.kafka_sasl_password
        return cls(
            protocol=protocol,
            ssl_context=context,
            ca_file=settings.kafka_tls_ca_file,
            client_cert=settings.kafka_tls_cert_file is not None,
            sasl_mechanism=settings.kafka_sasl_mechanism if sasl else None,
            username=settings.kafka_sasl_username if sasl else None,
            password=password.get_secret_value() if sasl and password else None,
        )

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    def options(self) -> dict[str, Any]:
        """Keyword arguments for any aiokafka client (producer, consumer, admin)."""
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.ssl_context is not None:
            out["ssl_context"] = self.ssl_context
        if self.sasl_mechanism is not None:
            out.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.username,
                sasl_plain_password=self.password,
            )
        return out

    def faust_credentials(self) -> CredentialsT | None:
        """The same for faust's ``broker_credentials``."""
        if self.sasl_mechanism is not None:
            return SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=self.ssl_context,
                mechanism=self.sasl_mechanism,
            )
        if self.ssl_context is not None:
            return SSLCredentials(self.ssl_context)
        return None

    def describe(self) -> str:
        """One line for logs: the protocol, the CA, the SASL user; never a password."""
        parts = [self.protocol]
        if self.tls:
            parts.append(f"CA {self.ca_file or 'the system store'}")
            if self.client_cert:
                parts.append("client certificate")
        if self.sasl_mechanism:
            parts.append(f"{self.sasl_mechanism} as {self.username!r}")
        return ", ".join(parts)


def _tls_context(settings: Settings) -> ssl.SSLContext:
    for name in ("kafka_tls_ca_file", "kafka_tls_cert_file", "kafka_tls_key_file"):
        path: Path | None = getattr(settings, name)
        if path is not None and not path.is_file():
            raise KafkaSecurityError(f"INTENTSTREAM_{name.upper()}={path}: no such file")
    try:
        context = ssl.create_default_context(
            cafile=str(settings.kafka_tls_ca_file) if settings.kafka_tls_ca_file else None
        )
        context.check_hostname = settings.kafka_tls_check_hostname
        if settings.kafka_tls_cert_file is not None:
            key_password = settings.kafka_tls_key_password
            context.load_cert_chain(
                str(settings.kafka_tls_cert_file),
                str(settings.kafka_tls_key_file) if settings.kafka_tls_key_file else None,
                key_password.get_secret_value() if key_password else None,
            )
    except (ssl.SSLError, ValueError) as exc:
        raise KafkaSecurityError(f"the Kafka TLS files cannot be used: {exc}") from exc
    return context


async def start_client(client: Any, bootstrap: str, security: KafkaSecurity) -> None:
    """``client.start()``, and when it cannot reach the brokers, say why if security is the
    reason (aiokafka itself only says "Unable to bootstrap")."""
    try:
        await client.start()
    except KafkaError as exc:
        await (client.stop() if hasattr(client, "stop") else client.close())
        if isinstance(exc, KafkaConnectionError):
            reason = await tls_problem(bootstrap, security) or await sasl_problem(bootstrap, security)
            if reason is not None:
                raise KafkaSecurityError(reason) from exc
        raise


def _first(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    return host.strip("[]"), int(port)


async def sasl_problem(bootstrap: str, security: KafkaSecurity, timeout_s: float = 5.0) -> str | None:
    """Whether the first bootstrap server accepts the SASL mechanism (one SaslHandshake v1
    request, over TLS when configured); None when it does, SASL is off, or it cannot tell."""
    if security.sasl_mechanism is None:
        return None
    mechanism = security.sasl_mechanism.encode()
    client = b"intentstream"
    # header: api_key 17, api_version 1, correlation id 1, client id; body: the mechanism
    body = (
        struct.pack(">hhih", 17, 1, 1, len(client)) + client + struct.pack(">h", len(mechanism)) + mechanism
    )
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(*_first(bootstrap), ssl=security.ssl_context), timeout_s
        )
        try:
            writer.write(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", await asyncio.wait_for(reader.readexactly(4), timeout_s))[0]
            reply = await asyncio.wait_for(reader.readexactly(size), timeout_s)
        finally:
            writer.close()
        _, error, count = struct.unpack(">ihi", reply[:10])
        offered, at = [], 10
        for _ in range(max(0, count)):
            (n,) = struct.unpack(">h", reply[at : at + 2])
            offered.append(reply[at + 2 : at + 2 + n].decode(errors="replace"))
            at += 2 + n
    except (OSError, TimeoutError, ValueError, struct.error, asyncio.IncompleteReadError):
        return None
    if error == 0:
        return None
    return (
        f"the broker at {bootstrap} refused SASL {security.sasl_mechanism} (Kafka error {error}; "
        f"it lists {offered})"
    )


async def tls_problem(bootstrap: str, security: KafkaSecurity, timeout_s: float = 5.0) -> str | None:
    """Why a TLS handshake with the first bootstrap server fails, or None when it works
    (or TLS is off)."""
    if security.ssl_context is None:
        return None
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(*_first(bootstrap), ssl=security.ssl_context), timeout_s
        )
    except ssl.SSLCertVerificationError as exc:
        trusted = security.ca_file or "the system's CA store"
        return (
            f"the broker at {bootstrap} presented a certificate not trusted by {trusted}: "
            f"{exc.verify_message}"
        )
    except ssl.SSLError as exc:
        return f"TLS with the broker at {bootstrap} failed: {exc.reason or exc}"
    except (OSError, TimeoutError, ValueError):
        return None  # not a TLS problem: the broker is away, which aiokafka's error says
    writer.close()
    return None
