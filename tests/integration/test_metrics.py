"""A two-worker local run shows its metrics on each worker's Prometheus endpoint."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from intentstream.deploy.stack import free_port, resolve_endpoints
from intentstream.perf.demo import start_worker, stop_worker
from intentstream.producer import IntentProducer
from intentstream.settings import Settings
from tests.helpers import event_dict, eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: list[dict], name: str, **labels: str) -> float:  # type: ignore[type-arg]
    want = tuple(sorted(labels.items()))
    return float(sum(s.get((name, want), 0.0) for s in samples))


async def test_two_workers_expose_metrics_that_add_up(app_settings: Settings, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    endpoints = resolve_endpoints(app_settings)
    workers = [
        start_worker(
            app_settings.model_copy(update={"metrics_port": port}),
            endpoints,
            tmp_path / f"w{i}.log",
            planner=False,
        )
        for i, port in enumerate(ports)
    ]
    try:
        await eventually(lambda: all(scrape_ok(p) for p in ports), timeout_s=60)
        bootstrap = app_settings.kafka_bootstrap
        assert bootstrap is not None
        events = [event_dict(n, user=f"user{n % 20}") for n in range(300)]
        async with IntentProducer(bootstrap, app_settings) as producer:
            await producer.send_events(events)
            for _ in range(2):
                await producer.send_raw(app_settings.topic_behaviors, b"{not json", key=b"user1")

        def counted() -> list[dict] | None:  # type: ignore[type-arg]
            samples = [scrape(p) for p in ports]
            done = total(samples, "intentstream_events_applied_total") == 300
            dead = total(samples, "intentstream_dead_lettered_total", reason="malformed_json") == 2
            # A worker books a batch's events before its decisions: wait for both (seen once in
            # CI: 300 events applied, 5 of 20 first plans booked yet).
            decided = total(samples, "intentstream_trigger_decisions_total", reason="first_plan") >= 20
            return samples if done and dead and decided else None

        samples = await eventually(counted, timeout_s=90)
        async with httpx.AsyncClient() as client:
            for port in ports:
                assert (await client.get(f"http://127.0.0.1:{port}/healthz")).json() == {"live": True}
                assert (await client.get(f"http://127.0.0.1:{port}/nope")).status_code == 404
        for port in ports:  # the broker check runs every second; give a loaded machine a moment
            assert await eventually(partial(is_ready, port))
    finally:
        for worker in workers:
            stop_worker(worker)
    assert all(s[("intentstream_contexts", ())] > 0 for s in samples)  # both own partitions
    assert total(samples, "intentstream_contexts") == 20
    assert total(samples, "intentstream_trigger_decisions_total", reason="first_plan") == 20
    assert total(samples, "intentstream_replans_total", outcome="offered") > 0
    assert total(samples, "intentstream_live_records_total", outcome="written") >= 20  # no planner ran
    assert any(name == "intentstream_record_freshness_seconds" for s in samples for name, _ in s)
    assert any(name == "intentstream_consumer_lag" for s in samples for name, _ in s)
    assert any(name == "intentstream_context_freshness_seconds" for s in samples for name, _ in s)


def scrape_ok(port: int) -> bool:
    try:
        return "intentstream_events_applied_total" in httpx.get(f"http://127.0.0.1:{port}/metrics").text
    except httpx.HTTPError:
        return False


def is_ready(port: int) -> bool:
    response = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    return (response.status_code, response.json()) == (200, {"ready": True, "broker": True})
