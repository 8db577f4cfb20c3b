"""When to re-plan a user's intents, and how many re-plans the LLM gets.

``TriggerPolicy.decide`` is a pure function of (context, what just happened, now). The
``ReplanQueue`` sits between the decisions and the replans topic: it keeps only the newest
pending request per user, serves the most urgent first, and lets out no more than the
global budget per second (matched to what the LLM serves), counting what it drops.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from intentstream.schemas.events import Action, EnvSignal
from intentstream.schemas.record import Trigger
from intentstream.stream.context import ContextShape, UserContext, asked
from intentstream.stream.live import Facet

STRONG_ACTIONS = frozenset({Action.CART, Action.PURCHASE, Action.SEARCH})

# Priorities: lower is more urgent.
STRONG_NOVELTY, FIRST_PLAN, SIGNAL, NOVELTY, STALE = 0, 1, 1, 2, 4
PRIORITY_NAMES = {STRONG_NOVELTY: "strong_novelty", FIRST_PLAN: "first_plan_or_signal", NOVELTY: "novelty",
                  STALE: "stale"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Decision:
    reason: Trigger
    priority: int


@dataclass(frozen=True, slots=True)
class TriggerPolicy:
    """Ask the LLM only about what is new: a user's first interest with real weight
    (``first_min_weight``), an interest no earlier request asked about
    (``stream.live.novel``), a new environment signal for the user, or a stale plan; never
    within ``cooldown_s`` of the last request.
    Every other change is followed by the live record alone (``stream.live.compose``)."""

    cooldown_s: float = 2.0
    min_weight: float = 4.5  # recency-decayed weight of an interest worth asking about
    # A user's first plan waits for more: an interest of a dozen views, or three purchases.
    # Until then code's entries serve them (a visit of a few views is said in full by its
    # counts), and the LLM's work grows with the users who have something to reason about.
    first_min_weight: float = 12.0
    stale_after_s: float = 3600.0  # processing time since the last plan, with new events

    def weight_to_ask(self, ctx: UserContext) -> float:
        """The weight an interest of ``ctx`` needs to be asked about: ``first_min_weight``
        until the user's first request, then ``min_weight``."""
        return self.min_weight if ctx.last_replan_at else max(self.min_weight, self.first_min_weight)

    def decide(
        self,
        ctx: UserContext,
        now_s: float,
        *,
        signal: EnvSignal | None = None,
        new: Facet | None = None,
    ) -> Decision | None:
        """The trigger, or None to keep the current plan. ``new`` is the user's heaviest
        interest that no request asked about (``stream.live.novel``), when there is one;
        ``signal`` a signal that concerns the user and just arrived."""
        if self.cooling(ctx, now_s):
            return None
        if signal is not None:
            if signal.signal_id in ctx.signals_seen or not _described(ctx):
                return None
            return Decision(Trigger.signal(signal.kind), SIGNAL)
        if new is not None:
            if not ctx.last_replan_at:
                return Decision(Trigger.FIRST_PLAN, FIRST_PLAN)
            strong = any(a in STRONG_ACTIONS for a in new.counts)
            return Decision(Trigger.NOVELTY, STRONG_NOVELTY if strong else NOVELTY)
        if ctx.last_replan_at and ctx.events_since_plan and now_s - ctx.last_replan_at >= self.stale_after_s:
            return Decision(Trigger.STALE, STALE)
        return None

    def cooling(self, ctx: UserContext, now_s: float) -> bool:
        """Whether ``ctx`` was requested too recently to be asked about again."""
        return bool(ctx.last_replan_at) and now_s - ctx.last_replan_at < self.cooldown_s


def _described(ctx: UserContext) -> bool:
    """Whether the context holds any behaviour an LLM could plan from."""
    return any(b["text"] for b in ctx.recent) or bool(ctx.interests)


def mark_replanned(
    ctx: UserContext, now_s: float, shape: ContextShape, signal: EnvSignal | None = None
) -> None:
    """Record that a re-plan was requested for ``ctx`` at ``now_s``: what it asks about
    is no longer new."""
    ctx.last_replan_at = now_s
    ctx.events_since_plan = 0
    ctx.planned = asked(ctx, shape)
    if signal is not None:
        ctx.signals_seen.append(signal.signal_id)
        del ctx.signals_seen[:-16]


T = TypeVar("T")


@dataclass
class QueueCounters:
    offered: int = 0
    sent: int = 0
    superseded: int = 0  # replaced by a newer request for the same user
    shed: int = 0  # dropped because the queue was full
    shed_by_priority: dict[str, int] = field(default_factory=dict)  # PRIORITY_NAMES


@dataclass
class ReplanQueue(Generic[T]):
    """Pending re-plan requests: newest per user, most urgent first, at most
    ``rate_per_s`` out per second (bursts up to ``burst``), at most ``capacity`` waiting."""

    rate_per_s: float
    burst: float
    capacity: int
    clock: Callable[[], float]
    counters: QueueCounters = field(default_factory=QueueCounters)
    _pending: dict[str, tuple[int, int, T]] = field(default_factory=dict)
    _heap: list[tuple[int, int, str]] = field(default_factory=list)  # most urgent on top
    _worst: list[tuple[int, int, str]] = field(default_factory=list)  # least urgent on top
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _tokens: float = -1.0
    _refilled_at: float = 0.0

    def __len__(self) -> int:
        return len(self._pending)

    def offer(self, user_id: str, priority: int, item: T) -> None:
        self.counters.offered += 1
        old = self._pending.get(user_id)
        if old is not None:
            self.counters.superseded += 1
            priority = min(priority, old[0])  # the user stays as urgent as their most urgent cause
        elif len(self._pending) >= self.capacity:
            self._shed_one()
        seq = next(self._seq)
        self._pending[user_id] = (priority, seq, item)
        heapq.heappush(self._heap, (priority, seq, user_id))
        heapq.heappush(self._worst, (-priority, seq, user_id))

    def _shed_one(self) -> None:
        """Drop the least urgent, oldest pending request."""
        while self._worst:
            _, seq, user_id = heapq.heappop(self._worst)
            current = self._pending.get(user_id)
            if current is not None and current[1] == seq:
                del self._pending[user_id]
                self.counters.shed += 1
                shed, name = self.counters.shed_by_priority, PRIORITY_NAMES.get(current[0], str(current[0]))
                shed[name] = shed.get(name, 0) + 1
                return

    def take(self) -> list[T]:
        """The requests the budget lets out now, most urgent first."""
        now = self.clock()
        if self._tokens < 0:
            self._tokens, self._refilled_at = self.burst, now
        self._tokens = min(self.burst, self._tokens + (now - self._refilled_at) * self.rate_per_s)
        self._refilled_at = now
        out: list[T] = []
        while self._heap and self._tokens >= 1.0:
            _, seq, user_id = heapq.heappop(self._heap)
            current = self._pending.get(user_id)
            if current is None or current[1] != seq:
                continue  # superseded or shed: a stale heap entry
            del self._pending[user_id]
            out.append(current[2])
            self._tokens -= 1.0
        self.counters.sent += len(out)
        if len(self._heap) + len(self._worst) > 8 * max(len(self._pending), 1024):
            self._heap = [(p, s, u) for u, (p, s, _) in self._pending.items()]
            self._worst = [(-p, s, u) for u, (p, s, _) in self._pending.items()]
            heapq.heapify(self._heap)
            heapq.heapify(self._worst)
        return out
