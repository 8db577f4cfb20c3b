"""Crash recovery with the real broker: a worker killed with SIGKILL in the middle of a
replay, then restarted, ends with exactly the contexts of an uninterrupted run."""

from __future__ import annotations

import itertools
import signal
from pathlib import Path

import pytest

from deploy.stack import resolve_endpoints
from intentstream.producer import IntentProducer
from intentstream.settings import Settings
from perf.demo import start_worker, stop_worker
from perf.logs import load_events
from stream.context import UserContext, apply_event
from tests.helpers import consume

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def expected_contexts(settings: Settings, events: list) -> dict[str, UserContext]:  # type: ignore[type-arg]
    """The uninterrupted run: every event folded once, in order."""
    contexts: dict[str, UserContext] = {}
    for event in events:
        ctx = contexts.setdefault(event.user_id, UserContext(event.user_id))
        apply_event(
            ctx, event, recent_limit=settings.context_recent_events, seen_limit=settings.context_seen_ids
        )
    return contexts


def latest(records: list) -> dict[str, UserContext]:  # type: ignore[type-arg]
    found: dict[str, UserContext] = {}
    for r in records:
        if r.value is not None:
            ctx = UserContext.from_bytes(r.value)
            found[ctx.user_id] = ctx
    return found


def essence(ctx: UserContext) -> tuple[int, dict[str, int], list[dict[str, object]]]:
    return ctx.version, ctx.counts, ctx.recent


@pytest.mark.xfail(
    strict=False,
    reason="Known, intermittent (about 1 run in 10 under load): one event applied before the "
    "SIGKILL can be missing after the restart. Reading changelogs to their true end "
    "(stream/tansu.py) fixed the more frequent loss; the rest is still open in issue 3.",
)
async def test_sigkill_mid_replay_then_restart_equals_uninterrupted(
    app_settings: Settings, tmp_path: Path
) -> None:
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
            await producer.send_events(events)
        # Kill it once it is part-way through (some, not all, contexts written).
        partial = await consume(bootstrap, changelog, until=lambda r: len(r) >= 500, timeout_s=90)
        assert len(partial) >= 500
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        stop_worker(first)

    second = start_worker(app_settings, endpoints, tmp_path / "second.log", planner=False)
    try:

        def caught_up(records: list) -> bool:  # type: ignore[type-arg]
            got = latest(records)
            return len(got) == len(expected) and all(got[u].version == c.version for u, c in expected.items())

        final = latest(await consume(bootstrap, changelog, until=caught_up, timeout_s=180))
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
