"""The faust app of one worker. Reads like its diagram:

    behaviours ─► context service (stream/ingest.py) ─► contexts changelog, replans
    env-signals ─► validate ─bad─► dead-letters
                     └─► signals global table (changelog read by every context service)
         └─► live records (stream/records.py: LLM tags re-ranked, cached or live entries) ─► Redis
    replans ─► HMAS agents (agents/chain.py, on vLLM) ─► judge gate ─► plan merged into the record
                                                                    └─► shared plan cache (Redis)

The agents only move data; the decisions are the plain functions in ``stream.context``,
``stream.trigger`` and ``agents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import torch
from mode import CrashingSupervisor, Service
from redis.exceptions import RedisError

from intentstream.agents.arbiter import scorer_for
from intentstream.agents.cached import ExplainerVet
from intentstream.agents.chain import IntentChain, PlanFailed, PlanRejected
from intentstream.agents.embedding import embedder_for
from intentstream.agents.llm import LLMError, OpenAICompatibleLLM
from intentstream.deploy.stack import Endpoints
from intentstream.kafka import KafkaSecurity
from intentstream.logs import json_logging_config
from intentstream.schemas.codec import InvalidMessage, decode_replan, decode_signal
from intentstream.schemas.record import Trigger
from intentstream.settings import Settings
from intentstream.store import IntentStore, connect_with
from intentstream.stream.batch import APPLY_FAILED, dead_letter_headers, shape_of
from intentstream.stream.catalog import Catalog
from intentstream.stream.ingest import ContextService
from intentstream.stream.metrics import PlannerCounters
from intentstream.stream.metrics import serve as serve_metrics
from intentstream.stream.plancache import PlanCache
from intentstream.stream.records import RecordWriter
from intentstream.stream.tansu import patch_faust_highwaters
from intentstream.stream.topics import ensure_topics

log = logging.getLogger("intentstream.worker")


def build_app(
    settings: Settings,
    endpoints: Endpoints,
    *,
    with_planner: bool = True,
    with_contexts: bool = True,
    scan_end_offsets: bool = False,
) -> faust.App:
    """The stream app for one worker process. ``with_planner=False`` runs ingestion only;
    ``with_contexts=False`` runs the planner only (so planners scale on their own)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    security = KafkaSecurity.from_settings(settings)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{endpoints.kafka_bootstrap}",
        broker_credentials=security.faust_credentials(),
        store="memory://",  # tables are rebuilt from their changelog topics on start
        topic_partitions=settings.topic_partitions,
        broker_session_timeout=settings.broker_session_timeout_s,
        consumer_auto_offset_reset="earliest",
        web_enabled=settings.worker_web_port is not None,
        web_port=settings.worker_web_port or 6066,
        datadir=str(settings.home / "faust"),
        key_serializer="raw",
        value_serializer="raw",
    )
    env_signals = app.topic(settings.topic_signals, partitions=settings.topic_partitions)
    replans = app.topic(settings.topic_replans, partitions=settings.topic_partitions)
    dead_letters = app.topic(settings.topic_dead_letters, partitions=settings.topic_partitions)
    # Values stay raw bytes both ways: a table's default serializer would hand back decoded
    # JSON after a recovery from the changelog, unlike what was written.
    signals = app.GlobalTable("signals", partitions=settings.topic_partitions, value_type=bytes)

    counters = PlannerCounters()
    skew = timedelta(seconds=settings.max_future_skew_s)
    records = None
    # A planner writes its plans to Redis (Endpoints.redis raises, saying what to set, when
    # there is none); a contexts-only worker runs without one.
    redis_url = endpoints.redis if with_planner else endpoints.redis_url
    catalog = Catalog(half_life_s=settings.catalog_half_life_s) if settings.catalog else None
    if redis_url is not None:
        store = IntentStore.from_settings(connect_with(settings, redis_url), settings)
        cache = (
            PlanCache(store.client, prefix=settings.redis_key_prefix, ttl_s=settings.plan_cache_ttl_s)
            if settings.plan_cache
            else None
        )
        records = RecordWriter(
            store, shape_of(settings), live_tags=settings.live_tags, cache=cache, vet=ExplainerVet(),
            catalog=catalog,
            items_per_tag=settings.catalog_items_per_tag,
            co_viewed=settings.catalog_co_viewed,
            category_popular=settings.catalog_category_popular,
        )  # fmt: skip
    elif with_contexts:
        log.warning("no Redis endpoint (INTENTSTREAM_REDIS_URL): contexts and re-plans only, no live records")
    contexts = ContextService(
        settings, endpoints.kafka_bootstrap, scan_end_offsets=scan_end_offsets, records=records
    )

    @app.task  # type: ignore[untyped-decorator]
    async def start_contexts() -> None:
        await app.add_runtime_dependency(
            _Running(contexts, consume=with_contexts, loop=app.loop, beacon=app.beacon)
        )
        if settings.metrics_port is not None:
            serve_metrics(contexts, counters, contexts.health, settings.metrics_host, settings.metrics_port)
            log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)

    async def dead_letter(message: Any, reason: str, detail: str, message_id: str | None = None) -> None:
        """Park the original bytes with the reason; the stream goes on."""
        counters.dead_lettered[reason] = counters.dead_lettered.get(reason, 0) + 1
        source = f"{message.topic}/{message.partition}/{message.offset}"
        log.warning(
            "dead-lettered %s: %s: %s",
            source,
            reason,
            detail,
            extra={"event_id": message_id, "reason": reason, "source": source},
        )
        await dead_letters.send(
            key=message.key, value=message.value, headers=dict(dead_letter_headers(reason, detail, source))
        )

    async def invalid(message: Any, error: InvalidMessage) -> None:
        await dead_letter(message, error.reason, error.detail, error.message_id)

    async def failed(message: Any, error: Exception) -> None:
        """A message whose handling raised what no check foresaw: it alone is parked."""
        log.error(
            "handling %s/%d/%d failed", message.topic, message.partition, message.offset, exc_info=error
        )
        await dead_letter(message, APPLY_FAILED, f"{type(error).__name__}: {error}"[:500])

    # An unexpected error crashes the app, so the worker stops (seen: exit code 1) instead of
    # faust's default of restarting the agent in a loop that silently applies nothing.
    @app.agent(env_signals, name="apply-signals", supervisor_strategy=CrashingSupervisor)
    async def apply_signals(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                signal = decode_signal(
                    event.value,
                    now=datetime.now(UTC),
                    max_bytes=settings.max_event_bytes,
                    max_future_skew=skew,
                )
            except InvalidMessage as exc:
                await invalid(event.message, exc)
                continue
            except Exception as exc:  # a value the codec did not foresee: one message's problem
                await failed(event.message, exc)
                continue
            signals[signal.signal_id] = event.value

    if with_planner:
        llm = OpenAICompatibleLLM(
            _require(endpoints.llm_base_url, "LLM_BASE_URL"),
            settings.llm_model_name,
            api_key=settings.llm_api_key,
            timeout_s=settings.llm_request_timeout_s,
            concurrency=settings.llm_concurrency,
        )
        embedder = embedder_for(settings.agents_embedder)
        # Load the model now: loading it on the first plan blocked the event loop, and with it
        # ingestion, for about 8 s (seen in `bench replay`'s lag and freshness plots).
        embedder.embed(["warm up"])
        scorer = scorer_for(embedder, settings.scorer_sharpness, settings.kernel_backend)
        log.info("the arbiter ranks through the scorer: %s", scorer.describe())
        chain = IntentChain(
            llm,
            embedder,
            max_tags=settings.tags_per_user,
            retries=settings.llm_max_retries,
            judge=settings.judge_online,
            scorer=scorer,
            # The catalog this worker follows names the brands and categories the judge knows.
            entities=catalog.entities if catalog is not None and records is not None else (),
        )
        assert records is not None  # made above for every planner
        store = records.store
        health = contexts.health
        health.redis = health.llm = 0.0  # a planner is ready only when both answer

        @app.timer(interval=5.0)  # type: ignore[untyped-decorator]
        async def check_dependencies() -> None:
            with contextlib.suppress(RedisError, OSError):
                if await store.client.ping():
                    health.redis = time.monotonic()
            if await llm.answers():
                health.llm = time.monotonic()

        @app.agent(
            replans,
            name="plan-intents",
            concurrency=settings.llm_concurrency,
            supervisor_strategy=CrashingSupervisor,
        )
        async def plan_intents(stream: faust.StreamT[bytes]) -> None:
            async for event in stream.events():
                try:
                    request = decode_replan(event.value)
                except InvalidMessage as exc:
                    await invalid(event.message, exc)
                    continue
                # A newer plan already landed (redelivery, or a later request overtook this one).
                [stored] = await store.states([request.user_id])
                if stored.plan_version >= request.context_version:
                    counters.replans_skipped_stale += 1
                    continue
                # Something new for a user with a plan: a delta plan over the plan kept in Redis.
                current = stored.plan if request.trigger == Trigger.NOVELTY else None
                try:
                    plan = await chain.plan(request, datetime.now(UTC), current)
                except PlanFailed as exc:
                    counters.book(exc.cost)
                    counters.plans_failed += 1
                    log.error(
                        "%s; the user keeps the previous record", exc, extra={"user_id": request.user_id}
                    )
                    continue
                except (RedisError, OSError, LLMError):
                    raise  # infrastructure: the worker stops with a clear error
                except PlanRejected as exc:
                    counters.book(exc.cost)
                    counters.plans_rejected_judge += 1
                    counters.verdicts["bad"] = counters.verdicts.get("bad", 0) + 1
                    log.warning(
                        "%s; the user keeps the previous record", exc, extra={"user_id": request.user_id}
                    )
                    continue
                except Exception as exc:  # a request the chain cannot handle: it alone is parked
                    await failed(event.message, exc)
                    continue
                cost = plan.cost
                counters.book(cost)
                record = await records.land_plan(plan.planned, datetime.now(UTC))
                if record is not None:
                    if records.cache is not None:
                        await records.cache.put(plan.cacheable)  # counted by the cache
                    counters.plans_written += 1
                    counters.verdicts[record.verdict] = counters.verdicts.get(record.verdict, 0) + 1
                    log.info(
                        "user %s v%d (%s): %s [%d prompt + %d generated tokens, %.1fs]",
                        record.user_id,
                        record.version,
                        record.trigger,
                        [f"{t.tag} ({t.source})" for t in record.tags],
                        cost.prompt_tokens,
                        cost.completion_tokens,
                        cost.latency_s,
                        extra={"user_id": record.user_id},
                    )
                else:
                    counters.plans_rejected_stale += 1

    @app.timer(interval=10.0)  # type: ignore[untyped-decorator]
    async def report() -> None:
        log.info("counters %s", counters)

    return app


class _Running(Service):
    """Runs the context service for as long as the faust worker runs."""

    def __init__(self, service: ContextService, *, consume: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service
        self.consume = consume

    async def on_start(self) -> None:
        await self.service.start(consume=self.consume)

    async def on_stop(self) -> None:
        await self.service.stop()


def _require(value: str | None, name: str) -> str:
    if value is None:
        raise ValueError(f"{name} is not set and the local stack does not run it (`intentstream up`/`llm`)")
    return value


def run_worker(
    settings: Settings,
    endpoints: Endpoints,
    *,
    with_planner: bool = True,
    with_contexts: bool = True,
    loglevel: str = "info",
) -> None:
    """Run one worker until SIGTERM/SIGINT (faust commits offsets and stops cleanly)."""
    torch.set_num_threads(settings.torch_threads)
    asyncio.run(ensure_topics(endpoints.kafka_bootstrap, settings))
    scan = settings.scan_end_offsets or (
        settings.scan_end_offsets is None and settings.kafka_bootstrap is None
    )
    if scan:
        patch_faust_highwaters(endpoints.kafka_bootstrap, KafkaSecurity.from_settings(settings).options())
    app = build_app(
        settings, endpoints, with_planner=with_planner, with_contexts=with_contexts, scan_end_offsets=scan
    )
    logging_config = json_logging_config(loglevel) if settings.log_format == "json" else None
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, logging_config=logging_config)
    worker.execute_from_commandline()
