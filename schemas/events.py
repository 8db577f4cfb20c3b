"""Messages producers publish: behaviour events and environment signals (schema version 1).

Text written by shoppers and sellers (titles, queries) is kept as data: it is length-limited
and stripped of control characters here, and prompts quote it inside delimited JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Final, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from intentstream.schemas.text import clean_text

SCHEMA_VERSION: Literal[1] = 1

# 1-128 Unicode code points (not UTF-16 units), taken exactly as sent. An id that begins or
# ends with whitespace (Unicode White_Space) is refused, not stripped: the id is a Redis key
# that readers in any language build byte for byte, and each language trims differently.
# The pattern runs in pydantic's Rust core: a Python validator here cost the hot path ~2 us.
UNPADDED = r"^\S(?:[\s\S]*\S)?$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=UNPADDED)]
ShortText = Annotated[str, AfterValidator(lambda s: clean_text(s, 64))]
ItemText = Annotated[str, AfterValidator(lambda s: clean_text(s, 256))]


def _aware(ts: datetime) -> datetime:
    """Naive timestamps are taken as UTC; everything inside is UTC."""
    try:
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00: before the first day UTC can hold
        raise ValueError("a time outside the range of UTC dates (years 1-9999)") from None


UtcTime = Annotated[datetime, AfterValidator(_aware)]


class Action(StrEnum):
    """What a shopper did."""

    VIEW = "view"
    CLICK = "click"
    FAVOURITE = "favourite"
    CART = "cart"
    PURCHASE = "purchase"
    SEARCH = "search"


# How strongly one action shows an interest (a purchase says more than a glance): the one
# table the context's interest weights, the trigger and the agents' evidence all read.
# Keyed by the enum; a plain ``str`` (as contexts keep actions) finds the same entry.
_WEIGHTS = {
    Action.VIEW: 1.0,
    Action.CLICK: 1.2,
    Action.FAVOURITE: 2.0,
    Action.SEARCH: 2.0,
    Action.CART: 3.0,
    Action.PURCHASE: 4.0,
}
ACTION_WEIGHT: Final[Mapping[str, float]] = MappingProxyType({a.value: w for a, w in _WEIGHTS.items()})
if _missing := set(Action) - set(_WEIGHTS):  # a new action must say how much it weighs
    raise ImportError(f"schemas.events.ACTION_WEIGHT has no weight for {sorted(_missing)}")
# What a shopper did, in words: the agents' explanations and the live entries say it alike.
_DONE = {
    Action.VIEW: "viewed", Action.CLICK: "clicked", Action.FAVOURITE: "saved",
    Action.CART: "put in the cart", Action.PURCHASE: "bought", Action.SEARCH: "searched for",
}  # fmt: skip
ACTION_DONE: Final[Mapping[str, str]] = MappingProxyType({a.value: w for a, w in _DONE.items()})
if _missing := set(Action) - set(_DONE):
    raise ImportError(f"schemas.events.ACTION_DONE has no words for {sorted(_missing)}")


class _Message(BaseModel):
    # Unknown fields are ignored so producers can add fields before workers learn them.
    model_config = ConfigDict(frozen=True, extra="ignore", str_max_length=4096)

    schema_version: Literal[1] = SCHEMA_VERSION


class BehaviorEvent(_Message):
    """One shopper behaviour; keyed by ``user_id`` on the behaviours topic."""

    event_id: Id
    user_id: Id
    action: Action
    ts: UtcTime
    item_id: Id | None = None
    item_text: ItemText | None = None  # title or category path; seller-written data
    category: ItemText | None = None
    brand: ShortText | None = None
    price: Annotated[float, Field(ge=0.0, le=1e9)] | None = None
    query: ItemText | None = None  # shopper-written data
    region: ShortText | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.action is Action.SEARCH and not self.query:
            raise ValueError("a search event needs a non-empty query")
        if self.action is not Action.SEARCH and self.item_id is None:
            raise ValueError(f"a {self.action.value} event needs an item_id")
        if self.price is not None and not math.isfinite(self.price):
            raise ValueError("price must be finite")
        return self


class SignalKind(StrEnum):
    """Kinds of environment signal."""

    WEATHER = "weather"
    HOLIDAY = "holiday"
    HOLIDAY_LEADUP = "holiday_leadup"  # the weeks before a gift holiday
    TRENDING = "trending"


class EnvSignal(_Message):
    """A weather, holiday or trending signal for a region or segment, valid for a window.

    ``region="*"`` concerns every user. Keyed by region on the env-signals topic.
    """

    signal_id: Id
    kind: SignalKind
    text: ItemText
    region: ShortText | None = None
    segment: ShortText | None = None
    valid_from: UtcTime
    valid_until: UtcTime
    ts: UtcTime

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.region is None and self.segment is None:
            raise ValueError("a signal needs a region or a segment ('*' for everyone)")
        if self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if not self.text:
            raise ValueError("a signal needs a non-empty text")
        return self

    def active_at(self, now: datetime) -> bool:
        return self.valid_from <= now < self.valid_until
