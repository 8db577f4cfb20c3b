"""When to re-plan a user's intents: a pure function of (context, event, now)."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.events import Action, BehaviorEvent
from stream.context import UserContext

STRONG_ACTIONS = frozenset({Action.CART, Action.PURCHASE, Action.SEARCH})


@dataclass(frozen=True, slots=True)
class TriggerPolicy:
    """Re-plan on strong events or every ``every_n_events``, never within ``cooldown_s``."""

    every_n_events: int = 5
    cooldown_s: float = 2.0

    def decide(self, ctx: UserContext, event: BehaviorEvent, now_s: float) -> str | None:
        """The trigger reason, or None to keep the current plan. Called after the event
        was applied to ``ctx``."""
        if ctx.last_replan_at and now_s - ctx.last_replan_at < self.cooldown_s:
            return None
        if not any(b["text"] for b in ctx.recent):
            return None  # nothing described to ground a plan on
        if event.action in STRONG_ACTIONS:
            return f"strong_event:{event.action.value}"
        if ctx.events_since_plan >= self.every_n_events:
            return "every_n_events"
        return None


def mark_replanned(ctx: UserContext, now_s: float) -> None:
    """Record that a re-plan was requested for ``ctx`` at ``now_s``."""
    ctx.last_replan_at = now_s
    ctx.events_since_plan = 0
