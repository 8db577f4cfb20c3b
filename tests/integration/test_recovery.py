"""Crash recovery with the real broker: a worker killed with SIGKILL in the middle of a
replay, then restarted, ends with exactly the contexts of an uninterrupted run."""

from __future__ import annotations

import itertools
import signal
from pathlib import Path

import pytest

from intentstream.deploy.stack import resolve_endpoints
from intentstream.perf.demo import start_worker, stop_worker
from intentstream.perf.logs import load_events
from intentstream.producer import IntentProducer
from intentstream.settings import Settings
from tests.helpers import consume, essence, expected_contexts, latest_contexts

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_sigkill_mid_replay_then_restart_equals_uninterrupted(
    app_settings: Settings, tmp_path: Path
) -> None:
    app_settings = app_settings.model_copy(update={"ingest_batch_max": 10})  # many small batches
    events = list(
        itertools.islice(load_events(app_settings.datasets_dir / "rees46" / "events.csv", "rees46"), 4000)
    )
    expected = expected_contexts(app_settings, events)
    bootstrap = app_settings.kafka_bootstrap
    assert bootstrap is not None
    changelog = f"{app_settings.app_id}-contexts-changelog"
    endpoints = resolve_endpoints(app_settings)

    first = start_worker(app_settings, endpoints, tmp_path / "first.log", planner=False)
    try:
        async with IntentProducer(bootstrap, app_settings) as producer:
            await producer.send_events(events[:2500])
        # Kill it while it works through the first part of the log (batches in flight).
        partial = await consume(bootstrap, changelog, until=lambda r: len(r) >= 300, timeout_s=90)
        assert len(partial) >= 300
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        stop_worker(first)
    so_far = latest_contexts(await consume(bootstrap, changelog, until=lambda r: False, timeout_s=3))
    assert 0 < sum(c.version for c in so_far.values()) <= 2500  # part of the replay applied, then the kill
    async with IntentProducer(bootstrap, app_settings) as producer:
        await producer.send_events(events[2500:])  # the rest of the log arrives while it is down

    second = start_worker(app_settings, endpoints, tmp_path / "second.log", planner=False)
    try:

        def caught_up(records: list) -> bool:  # type: ignore[type-arg]
            got = latest_contexts(records)
            return len(got) == len(expected) and all(got[u].version == c.version for u, c in expected.items())

        final = latest_contexts(await consume(bootstrap, changelog, until=caught_up, timeout_s=180))
    finally:
        stop_worker(second)
        print((tmp_path / "second.log").read_text()[-3000:])
    assert set(final) == set(expected)
    mismatched = {
        u: (final[u].version, expected[u].version)
        for u in expected
        if essence(final[u]) != essence(expected[u])
    }
    assert mismatched == {}  # user: (version after the crash, version of the uninterrupted run)
