"""One settings object, overridable by environment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from intentstream.deploy.stack import StackError, resolve_endpoints
from intentstream.settings import Settings


def test_conventional_service_variables_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "kafka-1:9092")
    monkeypatch.setenv("REDIS_URL", "rediss://feed:secret@redis:6380/0")
    monkeypatch.setenv("LLM_BASE_URL", "http://vllm:8000/v1")
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka-1:9092"
    endpoints = resolve_endpoints(settings, need_llm=True)
    assert endpoints.redis_url == "rediss://feed:secret@redis:6380/0"
    assert endpoints.llm_base_url == "http://vllm:8000/v1"


def test_prefixed_variables_override_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTENTSTREAM_TOPIC_PARTITIONS", "12")
    monkeypatch.setenv("INTENTSTREAM_MAX_EVENT_BYTES", "4096")
    settings = Settings()
    assert settings.topic_partitions == 12
    assert settings.max_event_bytes == 4096


def test_nonsense_limits_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTENTSTREAM_TOPIC_PARTITIONS", "0")
    with pytest.raises(ValidationError):
        Settings()


def test_to_env_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings(app_id="x", topic_partitions=3, kafka_bootstrap="k:1")
    for name, value in original.to_env().items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_no_services_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP", "REDIS_URL", "LLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(StackError, match=r"KAFKA_BOOTSTRAP.*intentstream up"):
        resolve_endpoints(Settings(home=tmp_path))
