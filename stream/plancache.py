"""The shared plan cache: what the LLM made for one interest, reused for every user who has it.

Many users share interests (the same product type and brand). When a plan lands, each of its
tags is kept under the canonical key of the interest it was drawn from (``interest_key``:
its heaviest cited item's text, lower case, words only), in Redis with a TTL, shared by every
worker. The explanation is kept as a *template*: the personal facts of the user it was
written for are slots (``{item}``, ``{count:view}``, ``{price}``), found by code
(``agents.cached.template_of``); a sentence with a number that is no fact of its item is
kept without template.

For another user with the same interest, the tag is served with no LLM call: the slots are
filled by code from that user's own facet (``fill``), the sentence must not name words of
the first user's item that this user's does not have, and a ``Vet`` checks the tag and the
sentence before a record carries them (``agents.cached.ExplainerVet``: the explainer's own
checks, so this layer needs no agents). A sentence that fails is replaced by the facts-only
live sentence. Such a tag says ``source: cache`` in the record.

The trigger asks the LLM about a user's new interests only when one of them is not cached.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from intentstream.schemas.events import ItemText, ShortText, UtcTime
from intentstream.schemas.record import EXPLANATION_MAX_CHARS, TagText

if TYPE_CHECKING:
    from intentstream.store import RedisClient
    from intentstream.stream.live import Facet

log = logging.getLogger("intentstream.plancache")

KEY_MAX_CHARS = 120
_NOT_WORD = re.compile(r"[^\w]+")
SLOT = re.compile(r"\{(item|price|count:[a-z]+)\}")

_WORD = re.compile(r"[a-z0-9]+")


def interest_key(text: str) -> str:
    """The canonical key of an interest: its text in lower case, words only, one space
    between them. ``"Samsung  Smartphone!"`` and ``"samsung smartphone"`` share one."""
    return " ".join(_NOT_WORD.sub(" ", text.casefold()).split())[:KEY_MAX_CHARS]


class CachedTag(BaseModel):
    """What the LLM made for one interest, as the cache keeps it (validated on every read:
    Redis is shared, its values are input)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(min_length=1, max_length=KEY_MAX_CHARS)
    tag: TagText
    template: str | None = Field(None, max_length=EXPLANATION_MAX_CHARS * 2)
    cite: ItemText  # the item the tag and the template were written for
    model: ShortText
    made_at: UtcTime


def price_text(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def facet_price(facet: Facet) -> str | None:
    """The facet's price as a sentence states it: ``199`` or the band ``120-310``."""
    if facet.price_low is None or facet.price_high is None:
        return None
    low, high = price_text(facet.price_low), price_text(facet.price_high)
    return low if low == high else f"{low}-{high}"


class Vet(Protocol):
    """How a writer checks what the cache serves before a record carries it (the agents'
    own checks: ``agents.cached.ExplainerVet``)."""

    def tag(self, tag: str) -> bool:
        """Whether a cached tag may be shown at all."""
        ...

    def sentence(self, text: str, facet: Facet, now: datetime) -> str | None:
        """The filled sentence, cleaned, when it is true of ``facet`` in a record written
        ``now``; else None."""
        ...


def fill(entry: CachedTag, facet: Facet, vet: Vet, now: datetime) -> str | None:
    """``entry``'s explanation for the user of ``facet`` in a record written ``now``: the
    slots filled with their facts and the sentence checked by ``vet``; None when a slot has
    no fact here, the sentence names words of the first user's item this one lacks, or it
    fails a check."""
    if entry.template is None:
        return None
    price = facet_price(facet)
    values = {"item": facet.text, **{f"count:{a}": str(n) for a, n in facet.counts.items()}}
    if price is not None:
        values["price"] = price
    if any(m.group(1) not in values for m in SLOT.finditer(entry.template)):
        return None
    foreign = set(_words(SLOT.sub(" ", entry.template))) & set(_words(entry.cite)) - set(_words(facet.text))
    if foreign:
        return None
    return vet.sentence(SLOT.sub(lambda m: values[m.group(1)], entry.template), facet, now)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.casefold())


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0  # values in Redis that are no valid entry (counted as misses too)
    stored: int = 0  # entries put (an existing entry is kept: the first wording stays)
    errors: int = 0  # Redis failed: the lookup counted nothing as cached, the put was dropped


class PlanCache:
    """The cache in Redis (``{prefix}:plan-cache:<hash of the key>``, JSON, expiring after
    ``ttl_s``), with a small in-process memo: found entries for ``memo_s``, absent keys for
    ``absent_s`` (a key cached meanwhile by another worker is seen after at most that)."""

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str,
        ttl_s: int,
        memo_s: float = 300.0,
        absent_s: float = 10.0,
        capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.memo_s = memo_s
        self.absent_s = absent_s
        self.capacity = capacity
        self.clock = clock
        self.counters = CacheCounters()
        self._memo: OrderedDict[str, tuple[float, CachedTag | None]] = OrderedDict()

    def redis_key(self, key: str) -> str:
        return f"{self.prefix}:plan-cache:{hashlib.sha1(key.encode()).hexdigest()[:24]}"

    async def get(self, keys: Iterable[str]) -> dict[str, CachedTag]:
        """The entries found for ``keys`` (one round trip for those not in the memo)."""
        now = self.clock()
        found: dict[str, CachedTag] = {}
        asking: list[str] = []
        for key in dict.fromkeys(keys):
            memo = self._memo.get(key)
            if memo is not None and memo[0] > now:
                if memo[1] is not None:
                    found[key] = memo[1]
                continue
            asking.append(key)
        if asking:
            try:
                values = await self.client.mget([self.redis_key(k) for k in asking])
            except (RedisError, OSError) as exc:  # a cache: without it the LLM is asked, nothing stops
                self.counters.errors += 1
                log.warning("plan cache unreadable, %d interests treated as not cached: %s", len(asking), exc)
                return found
            for key, raw in zip(asking, values, strict=True):
                entry = self._parse(key, raw)
                self._remember(key, entry, now)
                if entry is not None:
                    found[key] = entry
        return found

    def count(self, asked: int, found: int) -> None:
        """Book one decision's lookups (the memo serves most, so ``get`` cannot count them)."""
        self.counters.hits += found
        self.counters.misses += asked - found

    def _parse(self, key: str, raw: bytes | str | None) -> CachedTag | None:
        if raw is None:
            return None
        try:
            entry = CachedTag.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            self.counters.corrupt += 1
            log.warning("plan cache entry for %r is corrupt, ignored: %s", key, str(exc)[:200])
            return None
        if entry.key != key:  # another key's entry under this hash: never served for this one
            self.counters.corrupt += 1
            return None
        return entry

    def _remember(self, key: str, entry: CachedTag | None, now: float) -> None:
        self._memo[key] = (now + (self.memo_s if entry is not None else self.absent_s), entry)
        self._memo.move_to_end(key)
        while len(self._memo) > self.capacity:
            self._memo.popitem(last=False)

    async def put(self, new: Sequence[CachedTag]) -> int:
        """Keep ``new`` (an entry already there for a key stays). Returns how many were added."""
        if not new:
            return 0
        try:
            added = await self._put(new)
        except (RedisError, OSError) as exc:
            self.counters.errors += 1
            log.warning("plan cache not written (%d interests): %s", len(new), exc)
            return 0
        for entry in new:
            self._memo.pop(entry.key, None)  # read again: the entry kept may be an earlier one
        self.counters.stored += added
        return added

    async def _put(self, new: Sequence[CachedTag]) -> int:
        async with self.client.pipeline(transaction=False) as pipe:
            for entry in new:
                pipe.set(
                    self.redis_key(entry.key),
                    orjson.dumps(entry.model_dump(mode="json")),
                    ex=self.ttl_s,
                    nx=True,
                )
            return sum(bool(ok) for ok in await pipe.execute())
