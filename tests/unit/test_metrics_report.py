"""``/metrics`` serves the context service's latest report, made on the event loop: the
scraping thread neither walks the contexts the loop is changing nor repeats the loop's work."""

from __future__ import annotations

import asyncio
from pathlib import Path

from intentstream.settings import Settings
from intentstream.stream.context import UserContext
from intentstream.stream.ingest import ContextService
from intentstream.stream.metrics import PlannerCounters, WorkerCollector


async def test_metrics_read_the_report_the_event_loop_made_last(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, stats_interval_s=0.05)
    service = ContextService(settings, "127.0.0.1:9", scan_end_offsets=False)  # never connects
    collector = WorkerCollector(service, PlannerCounters())

    def contexts() -> float:
        family = next(m for m in collector.collect() if m.name == "intentstream_contexts")
        return float(family.samples[0].value)

    assert contexts() == 0  # no report yet: one is made for the scrape
    report = asyncio.create_task(service._report())
    try:
        await asyncio.sleep(0.12)
        service.contexts[0] = {"u1": UserContext("u1")}
        assert contexts() == 0  # the loop's last report, until it makes the next
        await asyncio.sleep(0.12)
        assert contexts() == 1
        assert service.stats_file.exists()
    finally:
        report.cancel()
