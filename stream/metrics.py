"""Prometheus metrics of one worker, served on INTENTSTREAM_METRICS_PORT.

Read from the worker's own counters when scraped (a collector, not instrumented calls), so
the hot path pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from stream.ingest import ContextService


@dataclass
class PlannerCounters:
    """What the worker's faust agents did: signals dead-lettered, plans and their LLM cost."""

    dead_lettered: dict[str, int] = field(default_factory=dict)
    replans_skipped_stale: int = 0
    plans_written: int = 0
    plans_rejected_stale: int = 0  # Redis held a newer record
    plans_failed: int = 0
    llm_requests: int = 0
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    llm_seconds: float = 0.0


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"intentstream_{name}", doc, value=value)


def _labelled(name: str, doc: str, label: str, values: Mapping[str, float], gauge: bool = False) -> Metric:
    family: Metric = (GaugeMetricFamily if gauge else CounterMetricFamily)(
        f"intentstream_{name}", doc, labels=[label]
    )
    for key, value in sorted(values.items()):
        family.add_metric([key], value)  # type: ignore[attr-defined]
    return family


class WorkerCollector(Collector):
    def __init__(self, contexts: ContextService, planner: PlannerCounters) -> None:
        self.contexts = contexts
        self.planner = planner

    def collect(self) -> Iterator[Metric]:
        c, p = self.contexts.counters, self.planner
        yield _counter("events_applied", "Behaviours applied to a context.", c.applied)
        yield _counter("events_duplicate", "Behaviours skipped as already applied.", c.duplicates)
        dead = dict(c.dead_lettered)
        for reason, n in p.dead_lettered.items():
            dead[reason] = dead.get(reason, 0) + n
        yield _labelled("dead_lettered", "Messages parked in the dead-letter topic.", "reason", dead)
        yield _labelled(
            "consumer_lag", "Records behind the end, per owned partition.", "partition",
            {str(tp): lag for tp, lag in self.contexts.lag.items()}, gauge=True,
        )  # fmt: skip
        fresh = self.contexts.freshness.percentiles()
        yield _labelled(
            "context_freshness_seconds",
            "Event produced to context written and acknowledged, over the last 10 s.",
            "quantile",
            {q: fresh[k] / 1000 for q, k in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99")) if k in fresh},
            gauge=True,
        )
        yield _labelled(
            "batch_seconds", "Where the context batch loop spends its time.", "phase",
            {"apply": c.seconds_apply, "write": c.seconds_write, "commit": c.seconds_commit},
        )  # fmt: skip
        yield _labelled("trigger_decisions", "Re-plans decided, by reason.", "reason", dict(c.triggers))
        q = self.contexts.queue.counters
        yield _labelled(
            "replans", "Re-plan requests by outcome in the budgeted queue.", "outcome",
            {"offered": q.offered, "sent": q.sent, "superseded": q.superseded, "shed": q.shed},
        )  # fmt: skip
        pending = GaugeMetricFamily("intentstream_replans_pending", "Re-plans waiting for budget.")
        pending.add_metric([], len(self.contexts.queue))
        yield pending
        yield _labelled(
            "plans", "Plans by outcome.", "outcome",
            {"written": p.plans_written, "stale": p.plans_rejected_stale, "failed": p.plans_failed,
             "skipped": p.replans_skipped_stale},
        )  # fmt: skip
        yield _labelled(
            "redis_writes", "Intent record writes to Redis.", "result",
            {"accepted": p.plans_written, "stale": p.plans_rejected_stale},
        )  # fmt: skip
        yield _labelled(
            "llm_tokens", "LLM tokens by kind (stage: tagger).", "kind",
            {"prompt": p.llm_prompt_tokens, "completion": p.llm_completion_tokens},
        )  # fmt: skip
        yield _counter("llm_requests", "Plans that got an answer from the LLM.", p.llm_requests)
        yield _counter("llm_seconds", "Seconds spent waiting for the LLM.", p.llm_seconds)
        users = GaugeMetricFamily("intentstream_contexts", "User contexts held by this worker.")
        users.add_metric([], sum(len(owned) for owned in self.contexts.contexts.values()))
        yield users


def serve(contexts: ContextService, planner: PlannerCounters, host: str, port: int) -> None:
    """Serve /metrics on ``host:port`` from a background thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(contexts, planner))
    start_http_server(port, addr=host, registry=registry)
