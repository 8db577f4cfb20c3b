"""Two workers in one consumer group split the partitions; when one is killed, the other
takes over its partitions and their contexts from the changelog, with nothing lost."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from intentstream.deploy.stack import resolve_endpoints
from intentstream.perf.demo import start_worker, stop_worker
from intentstream.perf.logs import load_events
from intentstream.producer import IntentProducer
from intentstream.settings import Settings
from intentstream.stream.stats import read_stats
from tests.helpers import consume, essence, eventually, expected_contexts, latest_contexts

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def partitions_by_pid(settings: Settings) -> dict[int, list[int]]:
    found = {}
    for path in (settings.home / "workers").glob("*.json"):
        stats = read_stats(path)
        if stats is not None and time.time() - stats["at"] < 3:
            found[stats["pid"]] = stats["partitions"]
    return found


async def test_two_workers_split_partitions_and_one_takes_over_when_the_other_dies(
    app_settings: Settings, tmp_path: Path
) -> None:
    settings = app_settings.model_copy(
        update={"topic_partitions": 4, "ingest_batch_max": 200, "stats_interval_s": 0.5}
    )
    events = list(load_events(settings.datasets_dir / "rees46" / "events.csv", "rees46"))[:6000]
    first_half, second_half = events[:3000], events[3000:]
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    changelog = f"{settings.app_id}-contexts-changelog"
    endpoints = resolve_endpoints(settings)
    a = start_worker(settings, endpoints, tmp_path / "a.log", planner=False)
    b = start_worker(settings, endpoints, tmp_path / "b.log", planner=False)
    try:
        split = await eventually(
            lambda: (p := partitions_by_pid(settings)).keys() == {a.pid, b.pid} and all(p.values()) and p,
            timeout_s=60,
        )
        assert sorted(split[a.pid] + split[b.pid]) == [0, 1, 2, 3]  # each owns some, none twice

        async with IntentProducer(bootstrap, settings) as producer:
            await producer.send_events(first_half)
        half = expected_contexts(settings, first_half)

        def reached(want: dict) -> object:  # type: ignore[type-arg]
            def check(records: list) -> bool:  # type: ignore[type-arg]
                got = latest_contexts(records)
                return all(u in got and got[u].version == c.version for u, c in want.items())

            return check

        await consume(bootstrap, changelog, until=reached(half), timeout_s=120)  # type: ignore[arg-type]

        b.send_signal(signal.SIGKILL)
        b.wait(10)
        async with IntentProducer(bootstrap, settings) as producer:
            await producer.send_events(second_half)
        expected = expected_contexts(settings, events)
        final = latest_contexts(
            await consume(bootstrap, changelog, until=reached(expected), timeout_s=180)  # type: ignore[arg-type]
        )
        taken_over = await eventually(
            lambda: partitions_by_pid(settings).get(a.pid) == [0, 1, 2, 3], timeout_s=30
        )
        assert taken_over
    finally:
        stop_worker(b)
        stop_worker(a)
        print((tmp_path / "a.log").read_text()[-3000:])
    mismatched = [u for u in expected if essence(final[u]) != essence(expected[u])]
    assert mismatched == []
    assert a.returncode == 0 or a.returncode is None
