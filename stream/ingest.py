"""The context service: the stream worker's hot path, from behaviours to contexts.

    behaviours ─► getmany (thousands at a time) ─► validate ─bad─► dead-letters
         └─► contexts in memory ─► changelog (acked) ─► commit offsets
                     ├─► live records (one version per changed user per batch) ─► Redis
                     └─► what is new ─► replan queue (newest per user, budget/s) ─► replans
    signals changelog (every worker reads all) ─► fan-out to the users they concern

Why not a faust agent: faust handles each message through several layers of per-event
objects and queues. Measured here on Tansu, a naive faust agent that updates a table per
event applies about 2,000 events/s and a ``take_events`` batch about 5,000/s, while
aiokafka's ``getmany`` delivers 200,000-300,000/s. So this service consumes with aiokafka
directly, in its own consumer group, inside the faust worker (which still runs the signal
validation and the planners).

Nothing lost, nothing counted twice: every context a batch changed is written to the
compacted changelog and acknowledged by the broker, and its live record written to Redis,
*before* the batch's offsets are committed (the next batch is fetched and applied while
those writes are in flight). After a crash the batch is delivered again and each context
skips what it had already applied (its per-partition offset watermark); so a crash after
the changelog's ack but before the record's write leaves that user's record one batch
behind until their next event. A partition's contexts are rebuilt from its
changelog partition when it is assigned (start-up, scale-out, a peer's death).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError, RebalanceInProgressError
from aiokafka.structs import ConsumerRecord

from intentstream.kafka import KafkaSecurity, start_client
from intentstream.schemas.codec import encode
from intentstream.schemas.events import EnvSignal
from intentstream.schemas.record import Trigger
from intentstream.settings import Settings
from intentstream.stream.batch import BatchPath, DeadLetter, dead_letter_headers, source_of
from intentstream.stream.catalog import CatalogFeed, Sighting, sightings
from intentstream.stream.changelog import BrokerUnavailable, Changelog, Staged, signals_changelog
from intentstream.stream.context import (
    UserContext,
    asked,
    concerns,
    replan_request,
    signals_for,
)
from intentstream.stream.live import unasked
from intentstream.stream.metrics import Health
from intentstream.stream.plancache import CachedTag, interest_key
from intentstream.stream.records import RecordWriter
from intentstream.stream.signals import StreamClock, follow_signals
from intentstream.stream.stats import ContextCounters, Freshness
from intentstream.stream.trigger import Decision, ReplanQueue, mark_replanned
from intentstream.stream.watchdog import watch_broker

log = logging.getLogger("intentstream.contexts")


class ContextService:
    """Consumes behaviours for the partitions this worker owns and keeps their contexts."""

    _consumer: AIOKafkaConsumer
    _producer: AIOKafkaProducer

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        *,
        scan_end_offsets: bool,
        records: RecordWriter | None = None,
    ) -> None:
        """``records`` writes each changed user's live record (None: contexts only)."""
        self.settings = settings
        self.records = records
        self.bootstrap = bootstrap
        self.scan_end_offsets = scan_end_offsets
        self.security = KafkaSecurity.from_settings(settings)
        self.path = BatchPath.from_settings(settings)
        self.counters = ContextCounters()
        self.freshness = Freshness()
        self.record_freshness = Freshness()  # event produced → a record that includes it
        self.contexts: dict[int, dict[str, UserContext]] = {}  # partition -> user -> context
        self.signals: dict[str, EnvSignal] = {}
        self.clock = StreamClock()  # event time: when a signal is in force
        self.queue: ReplanQueue[tuple[UserContext, str]] = ReplanQueue(
            rate_per_s=settings.replan_budget_per_s,
            burst=settings.replan_budget_burst,
            capacity=settings.replan_queue_capacity,
            clock=time.monotonic,
        )
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: Staged | None = None
        self._consuming = False
        self._fanned_out: set[str] = set()  # signal ids already fanned out to this worker's users
        # Signal id -> (when it was fanned out, users then cooling down from a request that
        # may have left without it): re-planned for it once their cooldown ends.
        self._owed: dict[str, tuple[float, set[str]]] = {}
        self.health = Health()
        self._requested_keys: set[str] = set()  # interests of requested re-plans (a sizing measure)
        self.lag: dict[int, int] = {}  # partition -> records behind its end, after the last batch
        self.stats_file = settings.home / "workers" / f"{settings.app_id}-{os.getpid()}.json"
        self._latest_stats: dict[str, Any] | None = None  # ``latest_stats``
        self.catalog_feed = (
            CatalogFeed(
                records.store.client,
                settings.redis_key_prefix,
                window_s=2 * settings.catalog_half_life_s,
                flush_s=settings.catalog_flush_s,
            )
            if records is not None and records.catalog is not None
            else None
        )

    # -- life cycle -------------------------------------------------------------------

    async def start(self, consume: bool = True) -> None:
        """Connect (aiokafka clients need the running loop) and start the loops. Without
        ``consume`` (a planner-only worker) only the broker watchdog runs."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.settings.app_id}-contexts",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(self.settings.broker_session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(self.settings.broker_session_timeout_s * 1000) // 3),
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            fetch_max_wait_ms=20,  # an idle partition must not hold up a busy one's records
            **self.security.options(),
        )
        # Tansu rejects idempotent producers (InitProducerId); acks=all confirms each write.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=False,
            linger_ms=2,
            max_batch_size=512 * 1024,
            request_timeout_ms=int(self.settings.broker_outage_s * 1000),
            **self.security.options(),
        )
        # Contexts are many small long-lived objects: full collections of them would stall the
        # batch loop for tens of milliseconds, so collect the young generation less often.
        gc.set_threshold(50_000, 20, 100)
        await start_client(self._producer, self.bootstrap, self.security)
        await self._producer.client.add_topic(self.settings.topic_behaviors)  # what the watchdog asks about
        self.changelog = Changelog(
            self.settings,
            self.bootstrap,
            self.security,
            self._producer,
            scan_end_offsets=self.scan_end_offsets,
        )
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "watch": lambda: watch_broker(
                self._producer, self.bootstrap, self.settings.broker_outage_s, self.health
            ),
        }
        feed, records = self.catalog_feed, self.records
        if feed is not None and records is not None and records.catalog is not None:
            catalog = records.catalog
            loops["catalog"] = lambda: feed.follow(catalog)  # the planner's records carry items too
            if consume:
                loops["catalog-flush"] = feed.flush_every
        if consume:
            self._consumer.subscribe([self.settings.topic_behaviors], listener=_Rebalance(self))
            await start_client(self._consumer, self.bootstrap, self.security)
            self._consuming = True
            signals = signals_changelog(self.settings)
            loops |= {
                "consume": self._consume,
                "signals": lambda: follow_signals(self.bootstrap, signals, self.security, self.on_signal),
                "replans": self._drain_replans,
                "sweep": self._sweep,
                "report": self._report,
            }
        for name, loop in loops.items():
            self._tasks.append(asyncio.create_task(self._guarded(loop), name=name))

    async def stop(self) -> None:
        async with self._lock:  # a batch in flight finishes (written and committed) first
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(KafkaError, BrokerUnavailable):
                await self._settle()
            with contextlib.suppress(KafkaError):
                await self._producer.flush()
        if self._consuming:
            await self._consumer.stop()  # leaves the group: peers take over at once
        await self._producer.stop()

    async def _guarded(self, loop: Callable[[], Awaitable[None]]) -> None:
        """A loop that fails stops the worker with a clear error, never silently."""
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.critical(
                "context service stopped: %s: %s; exiting so that nothing is lost silently",
                type(exc).__name__,
                exc,
                exc_info=True,
            )
            logging.shutdown()
            os._exit(3)

    # -- the hot path -----------------------------------------------------------------

    async def _consume(self) -> None:
        """Batch N+1 is fetched and applied while batch N's changelog writes are on their
        way; N's offsets are committed once its writes are acknowledged."""
        while True:
            batch = await self._consumer.getmany(
                timeout_ms=0 if self._inflight else 100, max_records=self.settings.ingest_batch_max
            )
            async with self._lock:
                staged = await self.apply_batch(batch) if batch else None
                await self._settle()
                self._inflight = staged

    async def apply_batch(
        self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> Staged | None:
        """Apply a batch (``BatchPath.apply``), request its re-plans, dead-letter what it
        could not apply and send the changed contexts to the changelog (not yet awaited)."""
        started = time.perf_counter()
        now = datetime.now(UTC)
        self.counters.first_batch_at = self.counters.first_batch_at or now.timestamp()
        messages: list[ConsumerRecord[bytes, bytes]] = []
        topic_of: dict[int, TopicPartition] = {}
        for tp, records in batch.items():
            topic_of[tp.partition] = tp
            end = self._consumer.highwater(tp)
            if end is not None and records and tp.partition in self.contexts:
                self.lag[tp.partition] = max(0, end - records[-1].offset - 1)
            messages += records
        outcome = self.path.apply(self.contexts, messages, now)
        if not outcome.offsets:
            return None
        c = self.counters
        c.applied += outcome.applied
        c.duplicates += outcome.duplicates
        c.seconds_decide += outcome.seconds_decide
        if outcome.changed:
            self.clock.observe(max(ctx.newest_event_ts for _, ctx in outcome.changed.values()))
            await self._signals_due()
        await self._ask(outcome.decisions, {user: ctx for user, (_, ctx) in outcome.changed.items()})
        live = None
        if self.records is not None and outcome.changed:
            changed = [ctx for _, ctx in outcome.changed.values()]
            live = asyncio.create_task(
                self._write_live(changed, now, sightings(outcome.events), outcome.pairs)
            )
        await self._dead_letter(outcome.dead)
        staged = Staged(
            records=list(outcome.changed.values()),
            offsets={topic_of[p]: offset for p, offset in outcome.offsets.items()},
            produced_ms=outcome.produced_ms,
            apply_s=time.perf_counter() - started,
            live=live,
        )
        await self.changelog.send(staged)
        return staged

    async def _write_live(
        self, ctxs: list[UserContext], now: datetime, seen: list[Sighting], pairs: list[tuple[str, str]]
    ) -> None:
        """The batch's items and co-viewed pairs to the shared catalog, then its live records
        (``RecordWriter.write_live``), counted."""
        assert self.records is not None
        started = time.perf_counter()
        if self.catalog_feed is not None and self.records.catalog is not None:
            self.catalog_feed.observe(seen, self.records.catalog)
            self.catalog_feed.observe_pairs(pairs, self.records.catalog)
        done = await self.records.write_live(ctxs, now)
        c = self.counters
        c.records_written += done.written
        c.records_unchanged += done.unchanged
        c.record_conflicts += done.conflicts
        c.records_gave_up += done.gave_up
        c.seconds_records += time.perf_counter() - started

    async def _settle(self) -> None:
        """Wait for the in-flight batch's writes, then commit its offsets."""
        staged, self._inflight = self._inflight, None
        if staged is None:
            return
        waited = time.perf_counter()
        if staged.live is not None:
            await staged.live  # a Redis outage beyond the store's retries stops the worker
            written_ms = time.time() * 1000
            for ms in staged.produced_ms:
                self.record_freshness.add(ms, written_ms - ms)
        await self.changelog.deliver(staged)
        self.counters.changelog_writes += len(staged.records)
        done_ms = staged.acked_ms or time.time() * 1000
        for ms in staged.produced_ms:
            self.freshness.add(ms, done_ms - ms)
        self.counters.last_batch_at = time.time()
        committing = time.perf_counter()
        assigned = self._consumer.assignment()
        try:
            await self._consumer.commit({tp: o for tp, o in staged.offsets.items() if tp in assigned})
        except (CommitFailedError, RebalanceInProgressError, IllegalStateError) as exc:
            # The batch will be delivered again to whoever owns the partition; every context
            # it touched is already written with its watermark, so it is skipped there.
            self.counters.commits_failed += 1
            log.warning("commit failed (%s); the batch will be redelivered and skipped", exc)
        c = self.counters
        c.batches += 1
        c.seconds_apply += staged.apply_s
        c.seconds_write += committing - waited
        c.seconds_commit += time.perf_counter() - committing

    async def _write(self, changed: Iterable[tuple[int, UserContext]]) -> None:
        """Write contexts to their changelog partition and wait for the broker's ack."""
        staged = Staged(records=list(changed), offsets={}, produced_ms=[], apply_s=0.0)
        if staged.records:
            await self.changelog.deliver(staged)
            self.counters.changelog_writes += len(staged.records)

    async def _dead_letter(self, dead: list[DeadLetter]) -> None:
        """Park each message's original bytes and key with the reason; the stream goes on."""
        futures = []
        for letter in dead:
            source = source_of(letter.message)
            self.counters.dead_lettered[letter.reason] = self.counters.dead_lettered.get(letter.reason, 0) + 1
            log.warning(
                "dead-lettered %s: %s: %s",
                source,
                letter.reason,
                letter.detail,
                extra={"event_id": letter.message_id, "reason": letter.reason, "source": source},
            )
            futures.append(
                await self._producer.send(
                    self.settings.topic_dead_letters,
                    letter.message.value,
                    key=letter.message.key,
                    headers=dead_letter_headers(letter.reason, letter.detail, source),
                )
            )
        await asyncio.gather(*futures)

    # -- re-plans ---------------------------------------------------------------------

    def _active_signals(self, now: datetime) -> list[EnvSignal]:
        return [s for s in self.signals.values() if s.active_at(now)]

    async def _ask(self, decisions: dict[str, Decision], ctxs: dict[str, UserContext]) -> None:
        """Request the batch's re-plans, except where the shared plan cache holds every new
        interest the LLM would be asked about: that user's record gets the cached tags (the
        live write) and the interests count as asked, with no LLM call."""
        cache = self.records.cache if self.records is not None else None
        new: dict[str, list[str]] = {}
        found: dict[str, CachedTag] = {}
        if cache is not None:
            policy, shape = self.path.policy, self.path.shape
            for user, decision in decisions.items():
                if decision.reason in (Trigger.FIRST_PLAN, Trigger.NOVELTY):
                    fresh = unasked(ctxs[user], shape, self.path.entities, policy.min_weight)
                    new[user] = list(dict.fromkeys(interest_key(f.text) for f in fresh))
            found = await cache.get(k for keys in new.values() for k in keys) if new else {}
        for user, decision in decisions.items():
            ctx, keys = ctxs[user], new.get(user)
            if cache is not None and keys:
                hits = sum(k in found for k in keys)
                cache.count(len(keys), hits)
                if hits == len(keys):
                    ctx.planned = asked(ctx, self.path.shape)
                    served = self.counters.served_from_cache
                    served[decision.reason.value] = served.get(decision.reason.value, 0) + 1
                    continue
                # What the cache would have served had every earlier request been planned by
                # now (the LLM keeping up): a measure for sizing, not a behaviour.
                if all(k in found or k in self._requested_keys for k in keys):
                    self.counters.cacheable_if_llm_kept_up += 1
                if len(self._requested_keys) > 1_000_000:
                    self._requested_keys.clear()
                self._requested_keys.update(keys)
            self._request(ctx, decision)

    def _request(self, ctx: UserContext, decision: Decision, signal: EnvSignal | None = None) -> None:
        """Queue a re-plan. The request itself is built when the budget lets it out, from the
        context as it is then: a user re-triggered meanwhile costs nothing extra."""
        mark_replanned(ctx, time.time(), self.path.shape, signal)
        reason = decision.reason.value
        self.counters.triggers[reason] = self.counters.triggers.get(reason, 0) + 1
        self.queue.offer(ctx.user_id, decision.priority, (ctx, decision.reason))

    async def _drain_replans(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            taken = self.queue.take()
            if not taken:
                continue
            now = self.clock.now()
            active = self._active_signals(now)
            futures = []
            for ctx, reason in taken:
                request = replan_request(
                    ctx,
                    trigger=reason,
                    signals=signals_for(ctx, active, now),
                    now=now,
                    shape=self.path.shape,
                )
                futures.append(
                    await self._producer.send(
                        self.settings.topic_replans, encode(request), key=ctx.user_id.encode()
                    )
                )
            await asyncio.gather(*futures)

    async def _sweep(self) -> None:
        """Re-plan users whose plan went stale (no event arrives to ask for it). Walks the
        contexts in slices, letting batches through in between, so a sweep over millions of
        users never stalls ingestion."""
        while True:
            await asyncio.sleep(self.settings.replan_sweep_interval_s)
            users = [(p, u) for p, owned in self.contexts.items() for u in owned]
            for start in range(0, len(users), 2000):
                async with self._lock:
                    now_s = time.time()
                    found = [
                        (partition, ctx)
                        for partition, user in users[start : start + 2000]
                        if (ctx := self.contexts.get(partition, {}).get(user)) is not None
                    ]
                    decisions = self.path.decide([ctx for _, ctx in found], now_s)
                    requested = [(p, ctx) for p, ctx in found if ctx.user_id in decisions]
                    for _, ctx in requested:
                        self._request(ctx, decisions[ctx.user_id])
                    await self._write(requested)
                await asyncio.sleep(0)
            async with self._lock:
                await self._signals_due()  # the clock moves on between events too

    # -- environment signals ----------------------------------------------------------

    async def on_signal(self, signal: EnvSignal) -> None:
        """Keep a signal until it expires by the stream clock; fan it out once in force."""
        self.counters.signals_applied += 1
        if self.clock.started and signal.valid_until <= self.clock.now():
            return  # over before it reached us: nothing to do
        self.signals[signal.signal_id] = signal  # in every request built from now on, at once
        async with self._lock:  # the fan-out waits for the batch being applied
            await self._signals_due()

    async def _signals_due(self) -> None:
        """Drop the signals that are over and fan out those that came into force, by the
        stream clock (the lock held). Before the first event the clock has nothing to judge
        by: signals wait."""
        if not self.signals or not self.clock.started:
            return
        now = self.clock.now()
        for signal_id in [i for i, s in self.signals.items() if s.valid_until <= now]:
            del self.signals[signal_id]
            self._fanned_out.discard(signal_id)
            self._owed.pop(signal_id, None)
        for signal in [s for s in self.signals.values() if s.signal_id not in self._fanned_out]:
            if signal.active_at(now):
                await self._fan_out(signal)
        if self._owed:
            await self._repay()

    async def _fan_out(self, signal: EnvSignal) -> None:
        """Re-plan (through the budget) the owned users the signal concerns, once each
        (the lock held)."""
        self._fanned_out.add(signal.signal_id)
        now_s = time.time()
        changed = []
        cooling: set[str] = set()
        policy = self.path.policy
        for partition, owned in self.contexts.items():
            for ctx in owned.values():
                if not concerns(signal, ctx):
                    continue
                if policy.cooling(ctx, now_s) and signal.signal_id not in ctx.signals_seen:
                    cooling.add(ctx.user_id)
                    continue
                decision = policy.decide(ctx, now_s, signal=signal)
                if decision is not None:
                    self._request(ctx, decision, signal)
                    changed.append((partition, ctx))
        if cooling:
            self._owed[signal.signal_id] = (now_s, cooling)
        self.counters.signal_replanned(signal.signal_id, len(changed))
        await self._write(changed)

    async def _repay(self) -> None:
        """Re-plan for a signal the users who were cooling down when it was fanned out, once
        their cooldown ends, unless they were asked about again since (that request carries
        it). The lock held."""
        now_s = time.time()
        policy = self.path.policy
        for signal_id, (at, users) in list(self._owed.items()):
            signal = self.signals.get(signal_id)
            changed = []
            for partition, owned in self.contexts.items():
                for user in [u for u in users if u in owned] if signal is not None else []:
                    ctx = owned[user]
                    if policy.cooling(ctx, now_s):
                        continue
                    users.discard(user)
                    if ctx.last_replan_at > at:
                        continue
                    decision = policy.decide(ctx, now_s, signal=signal)
                    if decision is not None:
                        self._request(ctx, decision, signal)
                        changed.append((partition, ctx))
            if signal is None or not any(u in owned for owned in self.contexts.values() for u in users):
                del self._owed[signal_id]  # over, or every user served (or now owned elsewhere)
            if changed:
                self.counters.signal_replanned(signal_id, len(changed))
                await self._write(changed)

    # -- partitions -------------------------------------------------------------------

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Keep the contexts of partitions this worker held before the rebalance and got
        back (nobody else can have changed them in between); rebuild the others."""
        async with self._lock:
            owned = {tp.partition for tp in assigned}
            for partition in [p for p in self.contexts if p not in owned]:
                del self.contexts[partition]
                self.lag.pop(partition, None)
            new = sorted(p for p in owned if p not in self.contexts)
            if not new:
                return
            started = time.monotonic()
            restored = await self.changelog.restore(new)
            for partition in new:
                self.contexts[partition] = restored.get(partition, {})
            gc.freeze()  # the restored contexts: never scanned again by the collector
            log.info(
                "partitions %s assigned: %d contexts restored from %s in %.2fs",
                new,
                sum(len(restored.get(p, {})) for p in new),
                self.changelog.topic,
                time.monotonic() - started,
            )

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # waits for the batch being applied ...
            await self._settle()  # ... and the writes in flight, then commits their offsets
            if revoked:
                log.info("partitions %s revoked", sorted(tp.partition for tp in revoked))

    # -- reporting --------------------------------------------------------------------

    def latest_stats(self) -> dict[str, Any]:
        """The report the event loop made last (``_report``, every ``stats_interval_s``), for
        readers on other threads (``/metrics``): made there, a report would iterate the
        contexts while the loop adds users, and would repeat the loop's work at every scrape.
        Before the loop's first report, one is made here."""
        return self._latest_stats or self.stats()

    def stats(self) -> dict[str, Any]:
        """The service's one report, as plain data: the stats file and ``/metrics`` read it."""
        c = self.counters
        contexts = [ctx for owned in self.contexts.values() for ctx in owned.values()]
        sample = contexts[:: max(1, len(contexts) // 200)]
        elapsed = c.last_batch_at - c.first_batch_at
        fresh, fresh_all = self.freshness.summaries(None, math.inf)
        records, records_all = self.record_freshness.summaries(None, math.inf)
        return {
            "pid": os.getpid(),
            "at": time.time(),
            "partitions": sorted(self.contexts),
            "lag": {str(p): n for p, n in sorted(self.lag.items())},  # records behind, per partition
            "users": len(contexts),
            "bytes_per_context_mean": (
                round(sum(len(x.to_bytes()) for x in sample) / len(sample)) if sample else 0
            ),
            "events_per_s": round(c.applied / elapsed) if elapsed > 0 else None,
            "freshness_ms": fresh,
            "freshness_ms_all": fresh_all,  # the whole ring: up to 250,000 events
            "record_freshness_ms": records,  # event produced → a live record that includes it
            "record_freshness_ms_all": records_all,
            "counters": asdict(c),
            "replan_queue": {**asdict(self.queue.counters), "pending": len(self.queue)},
            "plan_cache": asdict(self.records.cache.counters)
            if self.records is not None and self.records.cache is not None
            else None,
            "catalog": {
                "items": len(self.records.catalog),
                "pending_items": len(self.catalog_feed.pending),
                "items_with_co_viewed": len(self.records.catalog.co),
                "pending_pairs": len(self.catalog_feed.pairs),
                "skipped": self.catalog_feed.skipped,
            }
            if self.records is not None and self.records.catalog is not None and self.catalog_feed is not None
            else None,
            "entity_cache": {
                "size": len(self.path.entities),
                "hits": self.path.entities.hits,
                "misses": self.path.entities.misses,
            },
        }

    async def _report(self) -> None:
        self.stats_file.parent.mkdir(parents=True, exist_ok=True)
        while True:
            await asyncio.sleep(self.settings.stats_interval_s)
            stats = self._latest_stats = self.stats()
            tmp = self.stats_file.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(stats, option=orjson.OPT_INDENT_2))
            tmp.replace(self.stats_file)
            log.info(
                "contexts %s",
                orjson.dumps(
                    {k: stats[k] for k in ("users", "events_per_s", "freshness_ms", "replan_queue")}
                ).decode(),
            )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: ContextService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.service.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.service.on_assigned(assigned)
