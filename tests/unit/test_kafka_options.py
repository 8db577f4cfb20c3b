"""Kafka security settings become the options of every client (aiokafka and faust)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from pydantic import ValidationError

from intentstream.kafka import KafkaSecurity, KafkaSecurityError
from intentstream.settings import Settings


def test_plaintext_by_default() -> None:
    security = KafkaSecurity.from_settings(Settings())
    assert security.options() == {"security_protocol": "PLAINTEXT"}
    assert security.faust_credentials() is None


def test_tls_verifies_the_broker_against_the_system_store_unless_a_ca_is_given() -> None:
    security = KafkaSecurity.from_settings(Settings(kafka_security_protocol="SSL"))
    options = security.options()
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert isinstance(security.faust_credentials(), SSLCredentials)


def test_sasl_over_tls_carries_mechanism_user_and_password_but_never_logs_the_password() -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username="feed",
        kafka_sasl_password="hunter2-secret",
    )
    security = KafkaSecurity.from_settings(settings)
    options = security.options()
    assert (options["sasl_mechanism"], options["sasl_plain_username"]) == ("SCRAM-SHA-256", "feed")
    assert options["sasl_plain_password"] == "hunter2-secret"
    credentials = security.faust_credentials()
    assert isinstance(credentials, SASLCredentials)
    assert credentials.mechanism.value == "SCRAM-SHA-256"
    assert credentials.ssl_context is options["ssl_context"]
    for shown in (security.describe(), repr(settings), str(settings), repr(credentials)):
        assert "hunter2" not in shown
    assert settings.to_env()["INTENTSTREAM_KAFKA_SASL_PASSWORD"] == "hunter2-secret"  # for a child worker


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "needs INTENTSTREAM_KAFKA_SASL_USERNAME"),
        ({"kafka_tls_ca_file": "ca.pem"}, "use SSL or SASL_SSL"),
        ({"kafka_security_protocol": "SSL", "kafka_tls_cert_file": "c.pem"}, "both"),
        ({"kafka_security_protocol": "TLS"}, "literal_error"),
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"}, "literal_error"),
    ],
)
def test_inconsistent_security_settings_are_refused_at_start(fields: dict[str, str], words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(**fields)  # type: ignore[arg-type]
    assert words in str(caught.value) or words in {e["type"] for e in caught.value.errors()}


def test_a_missing_or_unusable_tls_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(
        KafkaSecurityError, match=r"INTENTSTREAM_KAFKA_TLS_CA_FILE=.*nowhere\.pem: no such file"
    ):
        KafkaSecurity.from_settings(Settings(kafka_security_protocol="SSL", kafka_tls_ca_file=missing))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(KafkaSecurityError, match="cannot be used"):
        KafkaSecurity.from_settings(Settings(kafka_security_protocol="SSL", kafka_tls_ca_file=junk))
