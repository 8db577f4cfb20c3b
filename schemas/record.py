"""What the stream hands the planners (replan requests) and what it writes to Redis
(intent records). The Redis layout is documented in docs/redis-contract.md."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter

from intentstream.schemas.events import SCHEMA_VERSION, Action, Id, ItemText, ShortText, SignalKind, UtcTime
from intentstream.schemas.text import plain_text, sentence_text

TAG_MAX_CHARS = 48
EXPLANATION_MAX_CHARS = 200
MAX_TAGS = 10

TagText = Annotated[str, AfterValidator(lambda s: plain_text(s, TAG_MAX_CHARS)), Field(min_length=1)]
Explanation = Annotated[
    str, AfterValidator(lambda s: sentence_text(s, EXPLANATION_MAX_CHARS)), Field(min_length=1)
]
_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)
Verdict = Literal["good", "average", "bad", "unjudged"]


class Trigger(StrEnum):
    """Why a user was re-planned: the ``trigger`` of every request and record the worker
    makes. docs/redis-contract.md lists exactly these (a test compares them)."""

    STRONG_CART = f"strong_event:{Action.CART}"
    STRONG_PURCHASE = f"strong_event:{Action.PURCHASE}"
    STRONG_SEARCH = f"strong_event:{Action.SEARCH}"
    SIGNAL_WEATHER = f"signal:{SignalKind.WEATHER}"
    SIGNAL_HOLIDAY = f"signal:{SignalKind.HOLIDAY}"
    SIGNAL_TRENDING = f"signal:{SignalKind.TRENDING}"
    DRIFT = "drift"
    EVERY_N_EVENTS = "every_n_events"
    STALE = "stale"

    @classmethod
    def strong(cls, action: Action) -> Trigger:
        return cls(f"strong_event:{action}")

    @classmethod
    def signal(cls, kind: SignalKind) -> Trigger:
        return cls(f"signal:{kind}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class RecentBehavior(_Frozen):
    """One behaviour as the planner sees it: the item's text, never its raw payload."""

    action: Action
    ts: UtcTime
    text: ItemText  # empty when the item has no description
    category: ItemText | None = None
    brand: ShortText | None = None
    price: float | None = None


class Interest(_Frozen):
    """An interest cluster of the compressed context: older behaviours folded together."""

    text: ItemText
    counts: dict[str, int]
    price_low: float | None = None
    price_high: float | None = None
    last_seen: UtcTime


class ActiveSignal(_Frozen):
    """An environment signal in force for the user when the re-plan was requested."""

    kind: str
    text: ItemText
    valid_until: UtcTime


class ReplanRequest(_Frozen):
    """A snapshot of one user's context, sent to the replans topic keyed by user."""

    schema_version: Literal[1] = SCHEMA_VERSION
    user_id: Id
    context_version: int = Field(ge=1)
    trigger: str
    newest_event_time: UtcTime
    requested_at: UtcTime
    region: ShortText | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    recent: list[RecentBehavior] = Field(default_factory=list, max_length=500)
    interests: list[Interest] = Field(default_factory=list, max_length=50)
    signals: list[ActiveSignal] = Field(default_factory=list, max_length=50)


class IntentTag(_Frozen):
    """A short shopping-interest phrase and one plain sentence saying why."""

    tag: TagText
    explanation: Explanation


class IntentRecord(_Frozen):
    """A user's current intents as written to Redis. ``version`` only ever increases."""

    schema_version: Literal[1] = SCHEMA_VERSION
    user_id: Id
    version: int = Field(ge=1)
    context_version: int = Field(ge=1)
    trigger: str
    tags: list[IntentTag] = Field(min_length=1, max_length=MAX_TAGS)
    event_time: UtcTime  # event time of the newest behaviour the plan saw
    planned_at: UtcTime
    written_at: UtcTime | None = None  # set by the writer
    model: str
    verdict: Verdict = "unjudged"

    def encode_written(self, written_at: datetime) -> bytes:
        """The record's JSON as the store writes it: stamped with ``written_at``. (A dict
        edit, not a model copy: this runs once per write on the hot path.)"""
        data = self.model_dump(mode="json", exclude_none=True)
        data["written_at"] = _TIME.dump_python(written_at, mode="json")
        return orjson.dumps(data)
