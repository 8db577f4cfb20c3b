"""What the stream hands the planners (replan requests) and what it writes to Redis
(intent records). The Redis layout is documented in docs/redis-contract.md."""

from __future__ import annotations

from collections.abc import Sequence
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
MAX_ITEMS_PER_TAG = 20
MAX_RECORD_ITEMS = 50  # ids in a record's co_viewed or category_popular

TagText = Annotated[str, AfterValidator(lambda s: plain_text(s, TAG_MAX_CHARS)), Field(min_length=1)]
Explanation = Annotated[
    str, AfterValidator(lambda s: sentence_text(s, EXPLANATION_MAX_CHARS)), Field(min_length=1)
]
_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)
Verdict = Literal["good", "average", "bad", "unjudged"]


class Trigger(StrEnum):
    """Why a record was made: the ``trigger`` of every request and record the worker
    writes. docs/redis-contract.md lists exactly these (a test compares them).

    The LLM is asked only about what is new: a user's first interest with real weight, an
    interest its tags do not cover, a new environment signal, or a plan gone stale. Every
    other change of behaviour is followed by a ``live`` write, made by code."""

    FIRST_PLAN = "first_plan"
    NOVELTY = "novelty"
    SIGNAL_WEATHER = f"signal:{SignalKind.WEATHER}"
    SIGNAL_HOLIDAY = f"signal:{SignalKind.HOLIDAY}"
    SIGNAL_HOLIDAY_LEADUP = f"signal:{SignalKind.HOLIDAY_LEADUP}"
    SIGNAL_TRENDING = f"signal:{SignalKind.TRENDING}"
    STALE = "stale"
    LIVE = "live"

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
    category: ItemText | None = None  # the cluster's category path, where its items have one
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


TagSource = Literal["llm", "cache", "live"]
Wording = Literal["llm", "code"]  # who worded an explanation: the model (facts by code), or code


class IntentTag(_Frozen):
    """A short shopping-interest phrase and one plain sentence saying why. ``source`` says
    who made it: ``llm`` (the agents, judged, for this user), ``cache`` (the agents, for
    another user with the same interest: the shared plan cache, its facts filled in by code
    from this user's events) or ``live`` (code, from the user's own events, so a feed never
    mistakes an echo of behaviour for the model's insight). ``last_seen`` is
    the event time of the newest behaviour behind it. ``items``: the catalog's items for the
    tag, best first (``stream.catalog``; made by code, whatever the tag's source).
    ``wording``: who worded the explanation: ``llm`` (the model's sentence, its facts filled
    in by code) or ``code`` (a sentence of facts only: a live entry's, or the one code wrote
    where the model's answers failed the checks); None in records written before it."""

    tag: TagText
    explanation: Explanation
    source: TagSource = "llm"
    last_seen: UtcTime | None = None
    wording: Wording | None = None
    # A plain default (pydantic copies it), not a factory: ``model_construct`` on the hot path
    # inspects a factory's signature on every call.
    items: list[Id] = Field(default=[], max_length=MAX_ITEMS_PER_TAG)


class PlannedTag(_Frozen):
    """An LLM tag as the writers keep it: with the texts of the evidence it was made from,
    which decide what it covers."""

    tag: TagText
    explanation: Explanation
    cites: list[ItemText] = Field(default_factory=list, max_length=20)
    wording: Wording | None = None  # as ``IntentTag.wording``; None in plans kept before it


class LLMPlan(_Frozen):
    """The newest LLM plan of a user, kept by the writers beside the record (the hash's
    ``plan`` field; feed servers never need it). Each record the stream writes re-ranks
    these tags by the user's interest now and adds live entries for what they miss."""

    schema_version: Literal[1] = SCHEMA_VERSION
    user_id: Id
    context_version: int = Field(ge=1)  # of the context the plan was made from
    trigger: str
    event_time: UtcTime
    planned_at: UtcTime
    model: str
    verdict: Verdict = "unjudged"
    tags: list[PlannedTag] = Field(min_length=1, max_length=MAX_TAGS)


class IntentRecord(_Frozen):
    """A user's current intents as written to Redis. ``version`` only ever increases."""

    schema_version: Literal[1] = SCHEMA_VERSION
    user_id: Id
    version: int = Field(ge=1)
    context_version: int = Field(ge=1)
    trigger: str
    tags: list[IntentTag] = Field(min_length=1, max_length=MAX_TAGS)
    event_time: UtcTime  # event time of the newest behaviour the record saw
    planned_at: UtcTime  # when its LLM tags were planned (when it was composed, if none)
    written_at: UtcTime | None = None  # set by the writer
    model: str  # the LLM behind its llm tags ("none": live entries only)
    verdict: Verdict = "unjudged"  # the judge's verdict on its llm tags
    llm_context_version: int | None = Field(None, ge=1)  # the context its llm tags were planned from
    # Items other users took right before or after the user's last items, most often first
    # (``stream.catalog.Catalog.co_viewed``; made by code).
    co_viewed: list[Id] = Field(default=[], max_length=MAX_RECORD_ITEMS)
    # The most popular items now of the category the user last looked at
    # (``stream.catalog.Catalog.bestsellers``; made by code).
    category_popular: list[Id] = Field(default=[], max_length=MAX_RECORD_ITEMS)

    def items(self, n: int) -> list[str]:
        """Up to ``n`` items for a feed (``feed_items``): the tags' items in turn by rank,
        the co-viewed items and the category's popular ones in turn with them."""
        return feed_items([t.items for t in self.tags], self.co_viewed, self.category_popular, n)

    def encode_written(self, written_at: datetime) -> bytes:
        """The record's JSON as the store writes it: stamped with ``written_at``. (A dict
        edit, not a model copy: this runs once per write on the hot path.)"""
        data = self.model_dump(mode="json", exclude_none=True)
        for field in ("co_viewed", "category_popular"):
            if not data[field]:
                del data[field]  # optional in the contract: absent rather than empty
        for tag in data["tags"]:
            if not tag["items"]:
                del tag["items"]  # optional in the contract: absent rather than empty
        data["written_at"] = _TIME.dump_python(written_at, mode="json")
        return orjson.dumps(data)


def feed_items(
    per_tag: Sequence[Sequence[str]], co_viewed: Sequence[str], category_popular: Sequence[str], n: int
) -> list[str]:
    """What a feed shows of a record: its tags' items in turn by rank (``interleave``), in
    turn with the items co-viewed with the user's last ones and with the most popular items
    of the user's last category (the tags' first, the first co-viewed, the first popular,
    then the tags' second, ...), without repeats, at most ``n``."""
    return interleave([interleave(per_tag, n), co_viewed, category_popular], n)


def interleave(per_tag: Sequence[Sequence[str]], n: int) -> list[str]:
    """Items of several tags in turn by rank (each tag's first, then each tag's second, ...),
    without repeats, at most ``n``: the strongest tag leads, and every tag is shown."""
    out: list[str] = []
    seen: set[str] = set()
    for rank in range(max((len(items) for items in per_tag), default=0)):
        for items in per_tag:
            if rank < len(items) and items[rank] not in seen:
                seen.add(items[rank])
                out.append(items[rank])
                if len(out) == n:
                    return out
    return out
