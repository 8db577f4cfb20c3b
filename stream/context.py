"""A user's context: the functional core the stream worker keeps per user.

Plain data and plain functions, tested without Kafka. The context is bounded whatever the
history length: a window of recent behaviours in full, counts by action, and a bounded
window of seen event ids that makes redelivered events no-ops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.events import BehaviorEvent, EnvSignal
from schemas.record import ActiveSignal, RecentBehavior, ReplanRequest


@dataclass(slots=True)
class UserContext:
    """Everything the planner needs to know about one user, kept small."""

    user_id: str
    version: int = 0  # bumped by every applied event: the plan version derives from it
    region: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    recent: list[dict[str, Any]] = field(default_factory=list)  # RecentBehavior dicts, oldest first
    seen: list[str] = field(default_factory=list)  # recent event ids, oldest first
    newest_event_ts: float = 0.0  # epoch seconds of the newest behaviour applied
    events_since_plan: int = 0
    last_replan_at: float = 0.0  # epoch seconds (processing time) of the last replan request

    def to_bytes(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> UserContext:
        return cls(**orjson.loads(raw))


def _item_text(event: BehaviorEvent) -> str:
    if event.query:
        return event.query
    return event.item_text or event.category or event.brand or ""


def apply_event(ctx: UserContext, event: BehaviorEvent, *, recent_limit: int, seen_limit: int) -> bool:
    """Fold one behaviour into ``ctx`` in place. Returns False (and changes nothing) for an
    event id already applied, so redeliveries and replays never double-count."""
    if event.event_id in ctx.seen:
        return False
    ctx.seen.append(event.event_id)
    del ctx.seen[:-seen_limit]
    ctx.version += 1
    ctx.events_since_plan += 1
    ctx.counts[event.action.value] = ctx.counts.get(event.action.value, 0) + 1
    if event.region:
        ctx.region = event.region
    behaviour = RecentBehavior(
        action=event.action,
        ts=event.ts,
        text=_item_text(event),
        category=event.category,
        brand=event.brand,
        price=event.price,
    )
    ctx.recent.append(behaviour.model_dump(mode="json", exclude_none=True))
    # Keep time order even when events arrive slightly out of order.
    if len(ctx.recent) > 1 and ctx.recent[-1]["ts"] < ctx.recent[-2]["ts"]:
        ctx.recent.sort(key=lambda b: b["ts"])
    del ctx.recent[:-recent_limit]
    ctx.newest_event_ts = max(ctx.newest_event_ts, event.ts.timestamp())
    return True


def signals_for(ctx: UserContext, signals: list[EnvSignal], now: datetime) -> list[ActiveSignal]:
    """The environment signals in force for this user now (their region, or everyone)."""
    return [
        ActiveSignal(kind=s.kind.value, text=s.text, valid_until=s.valid_until)
        for s in signals
        if s.active_at(now) and s.region in ("*", ctx.region)
    ]


def replan_request(
    ctx: UserContext, *, trigger: str, signals: list[ActiveSignal], now: datetime
) -> ReplanRequest:
    """Snapshot the context for the planners."""
    return ReplanRequest(
        user_id=ctx.user_id,
        context_version=ctx.version,
        trigger=trigger,
        newest_event_time=datetime.fromtimestamp(ctx.newest_event_ts, UTC),
        requested_at=now,
        region=ctx.region,
        counts=dict(ctx.counts),
        recent=[RecentBehavior.model_validate(b) for b in ctx.recent],
        signals=signals,
    )
