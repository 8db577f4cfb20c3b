"""The batch path: behaviour messages in, changed contexts and re-plan decisions out.

    messages ─► decode ─bad─► dead letter (the codec's reason)
        └─► apply to the user's context ─fails─► dead letter (``apply_failed``), user rolled back
                └─► changed contexts ─► what is new (``stream.live.novel``) ─► decisions

``BatchPath.apply`` is a plain function of (contexts, messages, now) with no Kafka in it: the
worker (``stream/ingest.py``) calls it for every batch it consumes, and the tests and the
evaluation call the same function. Whatever goes wrong while applying one message costs
that message alone: it is dead-lettered with the error, the user's context is left as if the
message had never come, and the batch goes on. The worker never stops for data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from intentstream.schemas.codec import InvalidMessage, decode_event
from intentstream.schemas.events import BehaviorEvent
from intentstream.settings import Settings
from intentstream.stream.catalog import co_view_pairs
from intentstream.stream.context import ContextShape, UserContext, apply_event
from intentstream.stream.entities import EntityCache
from intentstream.stream.live import novel
from intentstream.stream.trigger import Decision, TriggerPolicy

log = logging.getLogger("intentstream.contexts")

APPLY_FAILED = "apply_failed"


class Delivered(Protocol):
    """One message as the broker delivered it: aiokafka's ``ConsumerRecord`` is one as it
    comes (the worker passes its records without copying them), :class:`Message` another."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int | float: ...  # milliseconds: when the producer made it


@dataclass(frozen=True, slots=True)
class Message:
    """A message built by hand (the evaluation, the tests)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # milliseconds: when the producer made it


def source_of(message: Delivered) -> str:
    """Where a message sits: topic/partition/offset."""
    return f"{message.topic}/{message.partition}/{message.offset}"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that was not applied, with the stable reason code and what went wrong."""

    message: Delivered
    reason: str
    detail: str
    message_id: str | None = None

    @classmethod
    def invalid(cls, message: Delivered, error: InvalidMessage) -> DeadLetter:
        return cls(message, error.reason, error.detail, error.message_id)

    @classmethod
    def failed(cls, message: Delivered, error: Exception, message_id: str | None) -> DeadLetter:
        return cls(message, APPLY_FAILED, f"{type(error).__name__}: {error}"[:500], message_id)


def dead_letter_headers(reason: str, detail: str, source: str) -> list[tuple[str, bytes]]:
    """The headers every dead letter carries (``docs/operations``: reason, detail, source)."""
    return [("reason", reason.encode()), ("detail", detail.encode()), ("source", source.encode())]


@dataclass
class BatchOutcome:
    """What one batch did. ``changed`` maps each user whose context took an event to
    (partition, context); ``decisions`` are the re-plans it asks for, not yet requested."""

    changed: dict[str, tuple[int, UserContext]] = field(default_factory=dict)
    decisions: dict[str, Decision] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    offsets: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    produced_ms: list[float] = field(default_factory=list)  # of each applied event
    events: list[BehaviorEvent] = field(default_factory=list)  # applied, for the item catalog
    pairs: list[tuple[str, str]] = field(default_factory=list)  # items taken one after another
    applied: int = 0
    duplicates: int = 0
    seconds_decide: float = 0.0  # finding what is new and deciding


@dataclass(slots=True)
class _UserBatch:
    """One user's share of a batch, kept so a failed event can be rolled back alone."""

    before: UserContext | None  # a copy of the context as the batch found it; None: new user
    version_before: int
    applied: list[tuple[BehaviorEvent, tuple[int, int], float]] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # of the applied events


@dataclass
class BatchPath:
    """The bounds, trigger rule and caches a batch is applied with (one per worker)."""

    shape: ContextShape
    policy: TriggerPolicy
    entities: EntityCache
    max_event_bytes: int = 16 * 1024
    max_future_skew: timedelta = timedelta(minutes=5)

    @classmethod
    def from_settings(cls, settings: Settings, entities: EntityCache | None = None) -> BatchPath:
        return cls(
            shape=shape_of(settings),
            policy=policy_of(settings),
            entities=entities if entities is not None else EntityCache(),
            max_event_bytes=settings.max_event_bytes,
            max_future_skew=timedelta(seconds=settings.max_future_skew_s),
        )

    def apply(
        self,
        contexts: Mapping[int, MutableMapping[str, UserContext]],
        messages: Iterable[Delivered],
        now: datetime,
    ) -> BatchOutcome:
        """Apply ``messages`` to ``contexts`` (partition -> user -> context, changed in place).
        Messages of a partition not in ``contexts`` are skipped (revoked: their new owner
        reads them). Then each user the batch changed is decided once. Never raises for a
        message's content."""
        out = BatchOutcome()
        users: dict[str, _UserBatch] = {}
        for message in messages:
            owned = contexts.get(message.partition)
            if owned is None:
                continue
            out.offsets[message.partition] = message.offset + 1
            event = self._decode(message, now, out)
            if event is None:
                continue
            user = event.user_id
            ctx = owned.get(user)
            mine = users.get(user)
            if mine is None:
                mine = users[user] = _UserBatch(ctx.copy() if ctx else None, ctx.version if ctx else 0)
            if ctx is None:
                ctx = owned[user] = UserContext(user)
            position = (message.partition, message.offset)
            pairs = co_view_pairs(ctx.recent, event)  # with the items before this one
            try:
                if not apply_event(ctx, event, self.shape, self.entities, position):
                    out.duplicates += 1
                    continue
            except Exception as exc:
                out.dead.append(DeadLetter.failed(message, exc, event.event_id))
                log.exception("applying %s to user %r failed; dead-lettered", source_of(message), user)
                self._roll_back(owned, user, mine)
                continue
            mine.applied.append((event, position, message.timestamp))
            mine.pairs += pairs
            out.changed[user] = (message.partition, ctx)
        for mine in users.values():
            out.applied += len(mine.applied)
            out.produced_ms += [produced for _, _, produced in mine.applied]
            out.events += [event for event, _, _ in mine.applied]
            out.pairs += mine.pairs
        started = time.perf_counter()
        out.decisions = self.decide([ctx for _, ctx in out.changed.values()], now.timestamp())
        out.seconds_decide = time.perf_counter() - started
        return out

    def _decode(self, message: Delivered, now: datetime, out: BatchOutcome) -> BehaviorEvent | None:
        try:
            return decode_event(
                message.value or b"",
                now=now,
                key=message.key,
                max_bytes=self.max_event_bytes,
                max_future_skew=self.max_future_skew,
            )
        except InvalidMessage as exc:
            out.dead.append(DeadLetter.invalid(message, exc))
        except Exception as exc:  # a value the codec did not foresee: still one message's problem
            out.dead.append(DeadLetter.failed(message, exc, None))
            log.exception("decoding %s failed; dead-lettered", source_of(message))
        return None

    def _roll_back(self, owned: MutableMapping[str, UserContext], user: str, mine: _UserBatch) -> None:
        """Put the user's context back as the batch found it, then re-apply the events of the
        batch that went in before the failed one (in place: queued re-plans hold it)."""
        ctx = owned[user]
        ctx.reset(mine.before.copy() if mine.before is not None else UserContext(user))
        for event, position, _ in mine.applied:
            apply_event(ctx, event, self.shape, self.entities, position)
        if not mine.applied and mine.before is None:
            del owned[user]

    def decide(self, ctxs: Iterable[UserContext], now_s: float) -> dict[str, Decision]:
        """The trigger for each of ``ctxs`` (a batch's users, or the sweep's), from what is
        new in their context."""
        decisions = {}
        for ctx in ctxs:
            if self.policy.cooling(ctx, now_s):
                continue
            new = novel(ctx, self.shape, self.entities, self.policy.weight_to_ask(ctx))
            decision = self.policy.decide(ctx, now_s, new=new)
            if decision is not None:
                decisions[ctx.user_id] = decision
        return decisions


def shape_of(settings: Settings) -> ContextShape:
    return ContextShape(
        recent=settings.context_recent_events,
        max_interests=settings.context_max_interests,
        seen_ids=settings.context_seen_ids,
        join_similarity=settings.context_join_similarity,
        half_life_s=settings.interest_half_life_s,
        max_kinds=settings.context_max_kinds,
        lasting_half_life_s=settings.lasting_half_life_s,
        lasting_share=settings.lasting_share,
    )


def policy_of(settings: Settings) -> TriggerPolicy:
    return TriggerPolicy(
        cooldown_s=settings.replan_cooldown_s,
        min_weight=settings.replan_min_weight,
        first_min_weight=settings.replan_first_min_weight,
        stale_after_s=settings.replan_stale_after_s,
    )
