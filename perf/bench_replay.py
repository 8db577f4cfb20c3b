"""``intentstream bench replay``: a load report of the whole loop on real parts.

A throwaway broker and redis-server, one worker (contexts and planner) on the running vLLM
server (or one started for the run), and the log replayed into it as fast as it goes or at
``--rate``. While it runs, the worker's stats file and /metrics are sampled every second,
and Redis's changes stream is read, so the report has, over time and in summary:

* events/s published and applied, consumer lag;
* freshness: event published → its context written (the worker's own measure), and event
  published → the first Redis record that includes it, for every event (measured here from
  the changes stream: a record of context version ``v`` includes the user's first ``v``
  events);
* users with activity whose record, by the end, includes their newest event;
* re-plans decided per 1,000 events, those the shared plan cache served and those requested
  from the LLM (what it would have to serve), plans written, LLM tokens per plan, and the
  prompt tokens per 1,000 events that makes; live writes per second;
* the worker's CPU seconds per 1,000 events and peak memory (from /proc: Linux);
* with ``--signals holidays``: the log's holiday calendar published along the replay
  (``perf/replay.py``), and the users each signal re-planned against the users of its
  region in the log (a signal re-plans only its region's users, once each).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import platform
import re
import time
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from intentstream.deploy import stack
from intentstream.perf.bench_agents import llm_endpoint
from intentstream.perf.demo import start_worker, stop_worker
from intentstream.perf.logs import LoadStats, LogFormat
from intentstream.perf.replay import LogCalendar, SignalsAlong, calendar_for, messages_of
from intentstream.producer import IntentProducer
from intentstream.progress import say
from intentstream.reader import IntentReader
from intentstream.settings import Settings
from intentstream.signal_sources import SignalSource
from intentstream.store import connect_with
from intentstream.stream.stats import read_stats

Message = tuple[bytes, bytes]


@dataclass
class Sample:
    """The worker as seen at one moment (``t``: seconds since the replay began)."""

    t: float
    published: int
    applied: int
    lag: int
    fresh_p50_ms: float | None
    fresh_p99_ms: float | None
    plans_written: int
    cpu_s: float
    rss_mb: float


@dataclass
class Run:
    """What the bench saw: samples, when each user's events were published, record ages."""

    started: float = field(default_factory=time.time)
    published: int = 0
    sent_at: dict[bytes, list[float]] = field(default_factory=lambda: defaultdict(list))
    described: set[bytes] = field(default_factory=set)  # users with an event a record can name
    samples: list[Sample] = field(default_factory=list)
    refreshed: list[tuple[float, float]] = field(default_factory=list)  # (t, seconds event → record)
    recorded: dict[str, int] = field(default_factory=dict)  # user -> newest context version in Redis
    done_publishing: float | None = None


_DESCRIBED = re.compile(rb'"(?:item_text|query|category|brand)":\s*"[^"]')


def stamped(messages: Iterable[Message], run: Run) -> Iterator[Message]:
    """Note when each user's n-th event went out, and who has a described event."""
    for key, value in messages:
        run.sent_at[key].append(time.time())
        run.published += 1
        if key not in run.described and _DESCRIBED.search(value):
            run.described.add(key)
        yield key, value


async def publish(
    producer: IntentProducer,
    messages: Iterator[Message],
    run: Run,
    rate: float | None,
    along: SignalsAlong | None = None,
) -> int:
    """All at once, or ``rate`` per second in tenths of a second; with ``along``, in chunks,
    each followed by the signals its events reached."""
    if rate is None:
        sent = await (
            along.send(producer, stamped(messages, run))
            if along
            else producer.send_encoded(stamped(messages, run))
        )
    else:
        sent, started = 0, time.monotonic()
        step = max(1, int(rate / 10))
        passing = along.passing(messages) if along else messages
        while chunk := list(itertools.islice(passing, step)):
            sent += await producer.send_encoded(stamped(chunk, run))
            if along is not None:
                await along.publish_due(producer)
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
        if along is not None:
            await along.publish_due(producer, everything=True)
    run.done_publishing = time.time() - run.started
    return sent


def signal_report(calendar: LogCalendar, published: int, counters: dict[str, Any]) -> dict[str, Any]:
    """What the calendar held, what the worker did with it, and whether any signal
    re-planned more users than its region has in the log."""
    replans: dict[str, int] = counters.get("signal_replans", {})
    beyond = 0
    rows: dict[str, dict[str, Any]] = {}
    for signal in calendar.signals:
        replanned = replans.get(signal.signal_id, 0)
        users = calendar.users_by_region.get(signal.region or "", 0)
        beyond += max(0, replanned - users)
        rows[signal.signal_id] = {"text": signal.text, "region": signal.region, "users_replanned": replanned,
                                  "users_of_region_in_log": users}  # fmt: skip
    return {
        **calendar.summary(),
        "published": published,
        "received_by_worker": counters.get("signals_applied", 0),
        "users_replanned": counters.get("signals_fanned_out", 0),
        "by_signal": rows,
        "replans_beyond_their_regions_users": beyond,
        "note": (
            "users_replanned counts the users a signal's fan-out re-planned when it came into force "
            "by the stream clock (once per user per signal: their context remembers it); users whose "
            "first events came later get the signal in their own re-plans' requests instead"
        ),
    }


def _proc(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak resident MB) of a process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        status = Path(f"/proc/{pid}/status").read_text()
        peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        return cpu, peak / 1024
    except (OSError, StopIteration, IndexError, ValueError):
        return math.nan, math.nan


Metrics = list[tuple[str, dict[str, str], float]]


def scrape(port: int) -> Metrics:
    """The worker's /metrics: (name, labels, value) per sample."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
        text = reply.read().decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def total(metrics: Metrics, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for n, have, v in metrics if n == name and all(have.get(k) == x for k, x in labels.items()))


async def watch(run: Run, stats_file: Path, port: int, pid: int, stop: asyncio.Event) -> None:
    """Sample the worker every second until ``stop``."""
    while not stop.is_set():
        stats = read_stats(stats_file)
        with contextlib.suppress(OSError):
            metrics = scrape(port)
            if stats is not None:
                fresh = stats.get("freshness_ms") or {}
                cpu, rss = _proc(pid)
                run.samples.append(
                    Sample(
                        t=time.time() - run.started,
                        published=run.published,
                        applied=stats["counters"]["applied"],
                        lag=int(total(metrics, "intentstream_consumer_lag")),
                        fresh_p50_ms=fresh.get("p50"),
                        fresh_p99_ms=fresh.get("p99"),
                        plans_written=int(total(metrics, "intentstream_plans_total", outcome="written")),
                        cpu_s=cpu,
                        rss_mb=rss,
                    )
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def record_ages(run: Run, reader: IntentReader) -> None:
    """Event published → the first Redis record that includes it, for every event, from the
    changes stream (runs until cancelled)."""
    async for change in reader.changes("0", block_ms=500):
        seen = change.context_version or change.version
        sent = run.sent_at.get(change.user_id.encode(), [])
        before = run.recorded.get(change.user_id, 0)
        if seen <= before:
            continue  # a plan landing: no behaviour the record did not have
        run.recorded[change.user_id] = seen
        now = time.time()
        for at in sent[before : min(seen, len(sent))]:
            run.refreshed.append((now - run.started, now - at))


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2)}


PLAN_OUTCOMES = ("written", "failed", "judged_bad", "stale", "skipped")


def summarise(run: Run, stats: dict[str, Any], metrics: Metrics, sent: int) -> dict[str, Any]:
    """The report's figures from what was sampled."""
    counters = stats["counters"]
    applied = counters["applied"]
    span = counters["last_batch_at"] - counters["first_batch_at"]
    plans = {o: int(total(metrics, "intentstream_plans_total", outcome=o)) for o in PLAN_OUTCOMES}
    replans = plans["written"] + plans["failed"] + plans["judged_bad"]  # the ones the LLM worked on
    prompt = total(metrics, "intentstream_llm_tokens_total", kind="prompt")
    generated = total(metrics, "intentstream_llm_tokens_total", kind="completion")
    cpu = [s.cpu_s for s in run.samples if not math.isnan(s.cpu_s)]
    caught_up = next((s.t for s in run.samples if s.applied >= sent), None)
    delta = total(metrics, "intentstream_delta_plans_total")
    delta_prompt = total(metrics, "intentstream_delta_plan_prompt_tokens_total")
    requested = sum(counters["triggers"].values())
    served = sum(counters["served_from_cache"].values())
    decided = requested + served
    cache = stats.get("plan_cache") or {}
    looked_up = cache.get("hits", 0) + cache.get("misses", 0)
    prompt_per_plan = prompt / replans if replans else None
    fresh_users = sum(run.recorded.get(u.decode(), 0) >= len(run.sent_at[u]) for u in run.described)
    return {
        "events_published": sent,
        "publish_events_per_s": round(sent / run.done_publishing) if run.done_publishing else None,
        "events_applied": applied,
        "sustained_events_per_s": round(applied / span) if span > 0 else None,
        "caught_up_after_s": round(caught_up, 1) if caught_up is not None else None,
        "consumer_lag_max": max((s.lag for s in run.samples), default=0),
        "context_freshness_ms": {
            k: stats.get("freshness_ms_all", {}).get(k) for k in ("p50", "p95", "p99", "max", "samples")
        },
        # Every event: published → the first record whose context includes it, as this bench
        # sees it (its reader of the changes stream shares the machine) ...
        "record_freshness_s": {**_percentiles([a for _, a in run.refreshed]), "events": len(run.refreshed)},
        # ... and as the worker measures it: produced → its live record write acknowledged
        # (the newest 250,000 events).
        "record_freshness_worker_ms": {
            k: stats.get("record_freshness_ms_all", {}).get(k)
            for k in ("p50", "p95", "p99", "max", "samples")
        },
        "users_with_activity": len(run.sent_at),
        "users_with_described_activity": len(run.described),  # the others have nothing to name
        "users_with_fresh_record_ratio": round(fresh_users / len(run.described), 4)
        if run.described
        else None,
        "live_writes_per_s": round(counters["records_written"] / span, 1) if span > 0 else None,
        "live_writes": {
            k: counters[k]
            for k in ("records_written", "records_unchanged", "record_conflicts", "records_gave_up")
        },
        "replans_decided_per_1000_events": round(1000 * decided / max(1, applied), 1),
        # What the LLM would have to serve to do all the decided work after the plan cache
        # (the requests), and the prompt tokens that takes at the prompt size measured in
        # this run. The cache fills only from plans the LLM actually made here.
        "llm_plans_requested_per_1000_events": round(1000 * requested / max(1, applied), 1),
        "llm_prompt_tokens_per_1000_events": (
            round(1000 * requested * prompt_per_plan / max(1, applied)) if prompt_per_plan else None
        ),
        # Decided re-plans whose new interests were all cached (no request), and the share of
        # new interests looked up that were found.
        "plan_cache_hit_rate": round(served / decided, 4) if decided else None,
        # Sizing: the LLM demand had the LLM planned every request before the next decision
        # on the same interests (each plan then caches the interests it was asked about:
        # optimistic, a plan caches at most one interest per tag). Not what this run served.
        "llm_plans_requested_per_1000_events_if_llm_kept_up": round(
            1000 * (requested - counters.get("cacheable_if_llm_kept_up", 0)) / max(1, applied), 1
        ),
        "plan_cache_interest_hit_rate": round(cache.get("hits", 0) / looked_up, 4) if looked_up else None,
        "plan_cache": cache,
        "replans_by_reason": counters["triggers"],
        "served_from_cache_by_reason": counters["served_from_cache"],
        "replan_queue": stats["replan_queue"],
        # Decided re-plans the budget shed (the queue full), by how urgent they were.
        "replans_shed_by_priority": stats["replan_queue"].get("shed_by_priority", {}),
        "plans": plans,
        "prompt_tokens_per_replan": round(prompt / replans) if replans else None,
        # Of those, delta plans (experts only for what is new) and their prompt size.
        "delta_plans": int(delta),
        "prompt_tokens_per_delta_plan": round(delta_prompt / delta) if delta else None,
        "generated_tokens_per_replan": round(generated / replans) if replans else None,
        "worker_cpu_s_per_1000_events": round(1000 * (cpu[-1] - cpu[0]) / max(1, applied), 3)
        if cpu
        else None,
        "worker_peak_rss_mb": round(max((s.rss_mb for s in run.samples), default=math.nan), 1),
        "dead_lettered": counters["dead_lettered"],
    }


async def publish_alone(own: Settings, messages: Iterator[Message]) -> float:
    """The baseline: events/s publishing the log with nothing else running (to a scratch
    topic on the same broker, as fast as it goes)."""
    assert own.kafka_bootstrap is not None
    scratch = own.model_copy(update={"topic_behaviors": f"{own.topic_behaviors}-publish-alone"})
    async with IntentProducer(own.kafka_bootstrap, scratch) as producer:
        started = time.perf_counter()
        sent = await producer.send_encoded(messages)
        return sent / (time.perf_counter() - started)


async def _drive(
    own: Settings,
    messages: Iterator[Message],
    rate: float | None,
    drain_s: float,
    work: Path,
    run: Run,
    along: SignalsAlong | None = None,
) -> tuple[int, dict[str, Any], Metrics]:
    assert own.kafka_bootstrap is not None
    assert own.redis_url is not None
    assert own.metrics_port is not None
    endpoints = stack.Endpoints(own.kafka_bootstrap, own.redis_url, own.llm_base_url)
    worker = start_worker(own, endpoints, work / "worker.log")
    stats_file = own.home / "workers"
    stop = asyncio.Event()
    reader = IntentReader(
        connect_with(own, own.redis_url), prefix=own.redis_key_prefix, changes_stream=own.changes_stream
    )
    try:
        say("waiting for the worker to start ...")
        while not any(stats_file.glob("*.json")):
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}); see {work / 'worker.log'}")
            await asyncio.sleep(0.5)
        (file,) = stats_file.glob("*.json")
        watcher = asyncio.create_task(watch(run, file, own.metrics_port, worker.pid, stop))
        ages = asyncio.create_task(record_ages(run, reader))
        run.started = time.time()
        async with IntentProducer(own.kafka_bootstrap, own) as producer:
            say(f"replaying {'as fast as it goes' if rate is None else f'at {rate:,.0f} events/s'} ...")
            sent = await publish(producer, messages, run, rate, along)
        say(f"{sent:,} events published in {run.done_publishing:.1f}s; waiting for the worker ...")
        deadline = time.monotonic() + max(120.0, sent / 500)
        while not run.samples or run.samples[-1].applied < sent:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the worker did not apply every event; see {work / 'worker.log'}")
            await asyncio.sleep(1.0)
        say(f"applied; letting re-plans run for {drain_s:.0f}s more ...")
        await asyncio.sleep(drain_s)
        stop.set()
        await watcher
        ages.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ages
        stats = read_stats(file) or {}
        return sent, stats, scrape(own.metrics_port)
    finally:
        stop.set()
        stop_worker(worker)
        await reader.aclose()


def plots(run: Run, result: dict[str, Any], out: Path) -> list[str]:
    """Lag, throughput and freshness over time, each stating the machine and the model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    footer = f"{result['machine']}; model {result['model']}; {result['log']}"
    t = [s.t for s in run.samples]

    def figure(name: str, draw: Any, ylabel: str) -> str:
        fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=120)
        draw(ax)
        ax.set_xlabel("seconds since the replay began")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.text(0.01, 0.01, footer, fontsize=7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        path = out / f"replay-{name}.png"
        fig.savefig(path)
        plt.close(fig)
        return str(path)

    def lag(ax: Any) -> None:
        ax.plot(t, [s.lag for s in run.samples], label="consumer lag (records)")

    def throughput(ax: Any) -> None:
        ax.plot(t[1:], _rates(t, [s.published for s in run.samples]), label="published / s")
        ax.plot(t[1:], _rates(t, [s.applied for s in run.samples]), label="applied to contexts / s")

    def freshness(ax: Any) -> None:
        # The worker's window is the newest 10 s of events: shown only while events are applied.
        moving = [True] + [b.applied > a.applied for a, b in itertools.pairwise(run.samples)]
        for label, values in (
            ("p50", [s.fresh_p50_ms for s in run.samples]),
            ("p99", [s.fresh_p99_ms for s in run.samples]),
        ):
            shown = [v if v is not None and m else np.nan for v, m in zip(values, moving, strict=True)]
            ax.plot(t, shown, marker=".", label=f"event → context, {label} (10 s window)")
        if run.refreshed:
            ax.scatter(
                [x for x, _ in run.refreshed],
                [a * 1000 for _, a in run.refreshed],
                s=6,
                color="tab:red",
                label="event → Redis record (each record)",
            )
        ax.set_yscale("log")

    return [
        figure("lag", lag, "records behind"),
        figure("throughput", throughput, "events per second"),
        figure("freshness", freshness, "milliseconds (log scale)"),
    ]


def freshness_series(refreshed: list[tuple[float, float]], bin_s: float = 5.0) -> dict[str, list[float]]:
    """Event → record ages binned by when the record was seen: p50, p99 and count per bin."""
    bins: dict[int, list[float]] = defaultdict(list)
    for at, age in refreshed:
        bins[int(at // bin_s)].append(age)
    out: dict[str, list[float]] = {"t": [], "p50": [], "p99": [], "events": []}
    for b in sorted(bins):
        p50, p99 = np.percentile(bins[b], [50, 99])
        out["t"].append(round((b + 0.5) * bin_s, 1))
        out["p50"].append(round(float(p50), 3))
        out["p99"].append(round(float(p99), 3))
        out["events"].append(len(bins[b]))
    return out


def _rates(t: list[float], counts: list[int]) -> list[float]:
    return [(b - a) / max(1e-9, tb - ta) for a, b, ta, tb in zip(counts, counts[1:], t, t[1:], strict=False)]


def bench_replay(
    settings: Settings,
    log: Path,
    fmt: LogFormat,
    *,
    rate: float | None = None,
    limit: int | None = None,
    drain_s: float = 60.0,
    plot_dir: Path | None = None,
    signals: SignalSource = "none",
) -> dict[str, Any]:
    """Replay ``log`` through a fresh broker, redis-server and worker (with ``signals``, its
    calendar's signals along it); the load report."""
    load = LoadStats()
    calendar = calendar_for(signals, log, fmt, settings.max_event_bytes, limit)
    along = SignalsAlong(calendar.signals) if calendar is not None else None

    def messages(stats: LoadStats) -> Iterator[Message]:
        return itertools.islice(messages_of(log, fmt, stats, settings.max_event_bytes), limit)

    tag = uuid.uuid4().hex[:8]
    run = Run()
    with TemporaryDirectory() as tmp, llm_endpoint(settings) as (llm_url, _):
        work = Path(tmp)
        broker = stack.start_broker(work / "broker")
        redis = stack.start_redis(work / "redis")
        try:
            own = settings.model_copy(
                update={
                    "home": work / "home",
                    "app_id": f"bench-replay-{tag}",
                    "kafka_bootstrap": broker.address,
                    "redis_url": redis.address,
                    "llm_base_url": llm_url,
                    "scan_end_offsets": True,
                    "stats_interval_s": 1.0,
                    "metrics_port": stack.free_port(),
                }
            )
            say("baseline: publishing the log with nothing else running ...")
            alone = asyncio.run(publish_alone(own, messages(LoadStats())))
            sent, stats, metrics = asyncio.run(_drive(own, messages(load), rate, drain_s, work, run, along))
        finally:
            stack.stop(redis)
            stack.stop(broker)
    result = {
        "benchmark": "replay",
        "log": f"{log.parent.name}/{log.name}",
        "format": fmt,
        "rows_read": load.rows,
        "rows_skipped": dict(load.skipped),
        "pacing": "as fast as possible" if rate is None else f"{rate:g} events/s",
        "publish_alone_events_per_s": round(alone),
        **summarise(run, stats, metrics, sent),
        "drain_s": drain_s,
        "signals": (
            signal_report(calendar, along.published, stats.get("counters", {}))
            if calendar is not None and along is not None
            else None
        ),
        "model": settings.llm_model_name,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU vLLM",
        "notes": (
            "One worker process (contexts and planner) with a local Tansu broker and redis-server on "
            "loopback, sharing the machine with the vLLM server. publish_alone_events_per_s is the log "
            "published with nothing else running; publish_events_per_s is while the worker applies it. "
            "The re-plan budget "
            f"({settings.replan_budget_per_s:g}/s) and the LLM's speed bound the plans; decided re-plans "
            "beyond them wait in the queue (newest per user) or are shed. Record freshness counts every "
            "event from its publication to the first record whose context includes it; users with only "
            "undescribed events get no record and are not in users_with_fresh_record_ratio."
        ),
        "series": {
            "t": [round(s.t, 2) for s in run.samples],
            "published": [s.published for s in run.samples],
            "applied": [s.applied for s in run.samples],
            "lag": [s.lag for s in run.samples],
            "context_freshness_p99_ms": [s.fresh_p99_ms for s in run.samples],
            "plans_written": [s.plans_written for s in run.samples],
            "record_freshness_s": freshness_series(run.refreshed),
        },
    }
    if plot_dir is not None:
        result["plots"] = plots(run, result, plot_dir)
    return result
