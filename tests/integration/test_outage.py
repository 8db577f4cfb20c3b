"""A broker that disappears and returns: the worker reconnects and resumes, nothing lost.
A broker that stays away: the worker exits with a clear error instead of idling silently."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from intentstream.deploy import stack
from intentstream.perf.demo import start_worker, stop_worker
from intentstream.producer import IntentProducer
from intentstream.settings import Settings
from tests.helpers import consume, event_dict, latest_contexts

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[stack.Service]:
    """A broker for this test alone: it gets paused and killed."""
    service = stack.start_broker(tmp_path / "broker")
    yield service
    if stack._is_ours(service):
        os.kill(service.pid, signal.SIGCONT)
        stack.stop(service)


async def test_worker_resumes_after_the_broker_returns_and_exits_clearly_when_it_does_not(
    app_settings: Settings, own_broker: stack.Service, tmp_path: Path
) -> None:
    settings = app_settings.model_copy(
        update={"kafka_bootstrap": own_broker.address, "broker_outage_s": 12.0}
    )
    endpoints = stack.Endpoints(own_broker.address, None, None)
    changelog = f"{settings.app_id}-contexts-changelog"
    log = tmp_path / "worker.log"
    worker = start_worker(settings, endpoints, log, planner=False)
    try:
        async with IntentProducer(own_broker.address, settings) as producer:
            await producer.send_events([event_dict(n, user="before") for n in range(5)])
        await consume(own_broker.address, changelog, until=lambda r: "before" in latest_contexts(r))

        os.kill(own_broker.pid, signal.SIGSTOP)  # the broker stops answering ...
        await asyncio.sleep(5)
        os.kill(own_broker.pid, signal.SIGCONT)  # ... and comes back within the outage limit

        async with IntentProducer(own_broker.address, settings) as producer:
            await producer.send_events([event_dict(n, user="after") for n in range(5)])
        records = await consume(
            own_broker.address, changelog, until=lambda r: "after" in latest_contexts(r), timeout_s=90
        )
        contexts = latest_contexts(records)
        assert contexts["before"].version == 5
        assert contexts["after"].version == 5
        assert worker.poll() is None

        os.kill(own_broker.pid, signal.SIGKILL)  # gone for good
        exit_code = worker.wait(60)
    finally:
        stop_worker(worker)
        print(log.read_text()[-4000:])  # shown by pytest when the test fails
    output = log.read_text()
    assert exit_code == 3
    assert "has not answered for" in output
    assert "INTENTSTREAM_BROKER_OUTAGE_S=12" in output
