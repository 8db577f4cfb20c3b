"""The local stack starts, records and stops real services."""

from __future__ import annotations

from pathlib import Path

import pytest

from intentstream.deploy import stack
from intentstream.settings import Settings

pytestmark = pytest.mark.integration


def test_up_records_services_and_down_stops_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP", "REDIS_URL", "LLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(home=tmp_path)
    services = stack.up(settings, progress=lambda _: None)
    try:
        assert set(services) == {"broker", "redis"}
        assert stack._kafka_answers(services["broker"].port)
        assert stack._redis_answers(services["redis"].port)
        # A second `up` reuses what runs.
        assert stack.up(settings, progress=lambda _: None) == services
        endpoints = stack.resolve_endpoints(settings)
        assert endpoints.kafka_bootstrap == services["broker"].address
        assert endpoints.llm_base_url is None
    finally:
        stack.down(settings, progress=lambda _: None)
    assert stack.load_state(settings) == {}
    assert not stack._kafka_answers(services["broker"].port)
    assert not stack._redis_answers(services["redis"].port)


def test_configured_services_are_not_started(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1")
    assert stack.up(settings, progress=lambda _: None) == {}


def test_a_service_that_dies_on_start_is_reported_with_its_log(tmp_path: Path) -> None:
    with pytest.raises(stack.StackError, match="exited with code"):
        stack.start_redis(tmp_path, extra_args=["--no-such-option", "1"])


def test_stop_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    service = stack.start_redis(tmp_path)
    imposter = stack.Service("redis", service.pid, service.port, service.address, service.log, "/bin/other")
    stack.stop(imposter)
    assert stack._redis_answers(service.port)
    stack.stop(service)
