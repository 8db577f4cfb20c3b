"""Prometheus metrics and health probes of one worker, served on INTENTSTREAM_METRICS_PORT:

/metrics   Prometheus text, read from the worker's own counters when scraped (a
           collector, not instrumented calls: the hot path pays nothing for it)
/healthz   liveness: the worker's event loop has ticked in the last 30 s
/readyz    readiness: the broker, Redis and (for planners) the LLM answered recently
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from intentstream.agents.stage import PlanCost, StageCost
    from intentstream.stream.ingest import ContextService


@dataclass
class PlannerCounters:
    """What the worker's faust agents did: signals dead-lettered, plans and their LLM cost."""

    dead_lettered: dict[str, int] = field(default_factory=dict)
    replans_skipped_stale: int = 0
    plans_written: int = 0
    plans_rejected_stale: int = 0  # Redis held a newer record
    plans_failed: int = 0
    plans_rejected_judge: int = 0  # judged bad: not written
    plans_repaired: int = 0  # plans where code fixed or replaced an agent's answer
    stages: dict[str, StageCost] = field(default_factory=dict)  # LLM cost by agent stage
    verdicts: dict[str, int] = field(default_factory=dict)  # judge verdicts (bad ones are not written)
    delta_plans: int = 0  # plans made as delta plans (agents.chain.delta), whatever their outcome
    delta_prompt_tokens: int = 0

    def book(self, cost: PlanCost) -> None:
        """Add one plan's LLM cost, stage by stage."""
        for name, spent in cost.stages.items():
            mine = self.stages.setdefault(name, type(spent)())
            mine.calls += spent.calls
            mine.invalid += spent.invalid
            mine.prompt_tokens += spent.prompt_tokens
            mine.cached_prompt_tokens += spent.cached_prompt_tokens
            mine.completion_tokens += spent.completion_tokens
            mine.latency_s += spent.latency_s
        self.plans_repaired += bool(cost.repairs)
        if cost.delta:
            self.delta_plans += 1
            self.delta_prompt_tokens += cost.prompt_tokens


def _seconds(summary: Mapping[str, float]) -> dict[str, float]:
    """A freshness summary in milliseconds as quantile -> seconds."""
    quantiles = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
    return {q: summary[k] / 1000 for q, k in quantiles if k in summary}


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
        stats, p = self.contexts.latest_stats(), self.planner  # the service's report, not its insides
        c = stats["counters"]
        yield _counter("events_applied", "Behaviours applied to a context.", c["applied"])
        yield _counter("events_duplicate", "Behaviours skipped as already applied.", c["duplicates"])
        dead = dict(c["dead_lettered"])
        for reason, n in p.dead_lettered.items():
            dead[reason] = dead.get(reason, 0) + n
        yield _labelled("dead_lettered", "Messages parked in the dead-letter topic.", "reason", dead)
        yield _labelled(
            "consumer_lag",
            "Records behind the end, per owned partition.",
            "partition",
            stats["lag"],
            gauge=True,
        )
        fresh = stats["freshness_ms"]
        yield _labelled(
            "context_freshness_seconds",
            "Event produced to context written and acknowledged, over the last 10 s.",
            "quantile",
            _seconds(fresh),
            gauge=True,
        )
        yield _labelled(
            "batch_seconds", "Where the context batch loop spends its time.", "phase",
            {"apply": c["seconds_apply"], "write": c["seconds_write"], "commit": c["seconds_commit"]},
        )  # fmt: skip
        yield _labelled(
            "trigger_decisions", "Re-plans requested from the LLM, by reason.", "reason", c["triggers"]
        )
        yield _labelled(
            "replans_served_from_cache",
            "Re-plans decided whose new interests the shared plan cache all held (no LLM call), by reason.",
            "reason",
            c["served_from_cache"],
        )
        cache = stats.get("plan_cache") or {}
        yield _labelled(
            "plan_cache_lookups", "Plan cache lookups for new interests, by result.", "result",
            {"hit": cache.get("hits", 0), "miss": cache.get("misses", 0), "corrupt": cache.get("corrupt", 0)},
        )  # fmt: skip
        yield _counter("plan_cache_stored", "Interests written plans added to the shared plan cache.",
                       cache.get("stored", 0))  # fmt: skip
        yield _counter("decide_seconds", "Of apply: finding what is new and deciding.", c["seconds_decide"])
        yield _labelled(
            "live_records", "Live record writes by outcome.", "outcome",
            {"written": c["records_written"], "unchanged": c["records_unchanged"],
             "conflict": c["record_conflicts"], "gave_up": c["records_gave_up"]},
        )  # fmt: skip
        records = stats["record_freshness_ms"]
        yield _labelled(
            "record_freshness_seconds",
            "Event produced to a Redis record that includes it, over the last 10 s.",
            "quantile",
            _seconds(records),
            gauge=True,
        )
        q = stats["replan_queue"]
        yield _labelled(
            "replans", "Re-plan requests by outcome in the budgeted queue.", "outcome",
            {k: q[k] for k in ("offered", "sent", "superseded", "shed")},
        )  # fmt: skip
        pending = GaugeMetricFamily("intentstream_replans_pending", "Re-plans waiting for budget.")
        pending.add_metric([], q["pending"])
        yield pending
        yield _labelled(
            "plans", "Plans by outcome.", "outcome",
            {"written": p.plans_written, "stale": p.plans_rejected_stale, "failed": p.plans_failed,
             "skipped": p.replans_skipped_stale, "judged_bad": p.plans_rejected_judge,
             "repaired": p.plans_repaired},
        )  # fmt: skip
        yield _counter("delta_plans", "Plans made as delta plans (any outcome).", p.delta_plans)
        yield _counter("delta_plan_prompt_tokens", "Prompt tokens of delta plans.", p.delta_prompt_tokens)
        yield _labelled(
            "redis_writes", "Intent record writes to Redis.", "result",
            {"accepted": p.plans_written, "stale": p.plans_rejected_stale},
        )  # fmt: skip
        tokens = CounterMetricFamily(
            "intentstream_llm_tokens", "LLM tokens by agent stage and kind.", labels=["stage", "kind"]
        )
        for name, spent in sorted(p.stages.items()):
            tokens.add_metric([name, "prompt"], spent.prompt_tokens)
            tokens.add_metric([name, "prompt_cached"], spent.cached_prompt_tokens)
            tokens.add_metric([name, "completion"], spent.completion_tokens)
        yield tokens
        yield _labelled(
            "llm_requests", "LLM answers by agent stage.", "stage", {k: v.calls for k, v in p.stages.items()}
        )
        yield _labelled(
            "llm_invalid_answers", "LLM answers rejected by validation (then retried or repaired), by stage.",
            "stage", {k: v.invalid for k, v in p.stages.items()},
        )  # fmt: skip
        yield _labelled(
            "llm_seconds", "Seconds waiting for the LLM by agent stage.", "stage",
            {k: v.latency_s for k, v in p.stages.items()},
        )  # fmt: skip
        yield _labelled(
            "judge_verdicts", "Judge verdicts (bad plans are not written).", "verdict", dict(p.verdicts)
        )
        users = GaugeMetricFamily("intentstream_contexts", "User contexts held by this worker.")
        users.add_metric([], stats["users"])
        yield users


@dataclass
class Health:
    """When each dependency last answered (monotonic seconds); None: not needed here."""

    beat: float = field(default_factory=time.monotonic)  # the event loop's last tick
    broker: float = 0.0
    redis: float | None = None
    llm: float | None = None
    max_age_s: float = 15.0

    def live(self) -> bool:
        return time.monotonic() - self.beat < 30.0

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        now = time.monotonic()
        checks = {
            name: now - at < self.max_age_s
            for name, at in (("broker", self.broker), ("redis", self.redis), ("llm", self.llm))
            if at is not None
        }
        return all(checks.values()), checks


def serve(contexts: ContextService, planner: PlannerCounters, health: Health, host: str, port: int) -> None:
    """Serve /metrics, /healthz and /readyz on ``host:port`` from a background thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(contexts, planner))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                live = health.live()
                self._reply(200 if live else 503, orjson.dumps({"live": live}), "application/json")
            elif self.path == "/readyz":
                ready, checks = health.readiness()
                body = orjson.dumps({"ready": ready, **checks})
                self._reply(200 if ready else 503, body, "application/json")
            else:
                self._reply(404, b"not found", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass  # probes every few seconds would flood the log

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
