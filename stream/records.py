"""The two writers of a user's record, and how they never undo each other.

* The stream (``write_live``): once per batch, one new version for each user the batch
  changed, composed by ``stream.live.compose`` from the context, the user's newest LLM plan
  (read from the user's hash in the same round trip as the version) and the shared plan
  cache's entries for the user's interests (``stream.plancache``).
* The planner (``land_plan``): when an LLM plan is made, the plan is kept in the hash and
  merged into the record there (``stream.live.merge_plan``).

With a catalog (``stream.catalog``), each tag of what either writes carries the catalog's
items for it (``with_items``), the user's recent purchases left out, and the stream's
records carry the items co-viewed with the user's last ones and the most popular items of
their latest category (the planner's keep them).

Both write version = the stored version + 1 through the store's atomic only-if-newer
script, which makes it a compare-and-set: when the other writer got there first, the write
is refused and made again from what is stored now (a bounded number of times). A context
that is not newer than the stored record's is not written (a batch delivered again after a
restart); a plan not newer than the stored plan is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from intentstream.schemas.record import IntentRecord, LLMPlan
from intentstream.store import CorruptRecord, IntentStore, parse_record
from intentstream.stream.catalog import (
    CATEGORY_POPULAR_ITEMS,
    CO_VIEWED_ITEMS,
    ITEMS_PER_TAG,
    Catalog,
    latest_category,
    recent_items,
)
from intentstream.stream.context import ContextShape, UserContext
from intentstream.stream.entities import EntityCache
from intentstream.stream.live import compose, facets, merge_plan
from intentstream.stream.plancache import CachedTag, PlanCache, Vet, interest_key

log = logging.getLogger("intentstream.records")

ATTEMPTS = 4  # compare-and-set rounds before a write is left to the user's next change
ITEMS_MEMO_S = 30.0  # how long a tag's catalog items are reused before they are looked up again


@dataclass
class LiveOutcome:
    written: int = 0
    unchanged: int = 0  # the stored record already saw this context (or there is nothing to say)
    conflicts: int = 0  # refused because the other writer got there first, then made again
    gave_up: int = 0  # still refused after ATTEMPTS rounds


class RecordWriter:
    """Composes and writes records for one worker (its stream side and its planners)."""

    def __init__(
        self,
        store: IntentStore,
        shape: ContextShape,
        *,
        live_tags: int,
        cache: PlanCache | None = None,
        vet: Vet | None = None,
        catalog: Catalog | None = None,
        items_per_tag: int = ITEMS_PER_TAG,
        co_viewed: int = CO_VIEWED_ITEMS,
        category_popular: int = CATEGORY_POPULAR_ITEMS,
    ) -> None:
        """``cache``: the shared plan cache whose tags fill the entries no LLM tag of the
        user covers, each checked by ``vet`` (None: live entries only). ``catalog``: the
        items each tag carries, and the ``co_viewed`` and ``category_popular`` items a record
        carries (None: tags alone)."""
        if cache is not None and vet is None:
            raise ValueError("a plan cache needs a vet: what it serves is checked before a record carries it")
        self.store = store
        self.shape = shape
        self.live_tags = live_tags
        self.cache = cache
        self.vet = vet
        self.entities = EntityCache(capacity=50_000)  # text vectors of tags and facets
        self.catalog = catalog
        self.items_per_tag = items_per_tag
        self.co_viewed = co_viewed
        self.category_popular = category_popular
        self._items: dict[str, tuple[float, list[str]]] = {}  # tag -> (until, items): ITEMS_MEMO_S
        self._bestsellers: dict[str, tuple[float, list[str]]] = {}  # category -> the same

    def with_items(self, record: IntentRecord, ctx: UserContext | None = None) -> IntentRecord:
        """``record`` with the catalog's items on each tag, as of its newest event; the items
        ``ctx``'s recent behaviours bought are left out (a feed should not offer them again
        at once). A tag's items are remembered for ``ITEMS_MEMO_S`` (many users share tags).
        With ``ctx``, also the items co-viewed with its last items and the most popular items
        of its latest category (``latest_category``; a category's, too, remembered for
        ``ITEMS_MEMO_S``), its recent ones left out; without, ``record``'s own are kept."""
        if self.catalog is None or not len(self.catalog):
            return record
        bought = (
            {b["item"] for b in ctx.recent if b.get("item") and b["action"] == "purchase"} if ctx else set()
        )
        co_viewed, category_popular = record.co_viewed, record.category_popular
        now = time.monotonic()
        if ctx is not None:
            recent = {b["item"] for b in ctx.recent if b.get("item")}
            if self.co_viewed:
                co_viewed = self.catalog.co_viewed(recent_items(ctx.recent), self.co_viewed, exclude=recent)
            if self.category_popular:
                category = latest_category(ctx.recent)
                popular = self._bestsellers_of(self.catalog, category, record, now) if category else []
                category_popular = [i for i in popular if i not in recent][: self.category_popular]
        missing = [t.tag for t in record.tags if (memo := self._items.get(t.tag)) is None or memo[0] < now]
        if missing:
            if len(self._items) > 100_000:
                self._items.clear()
            found = self.catalog.candidates(
                missing, record.event_time.timestamp(), n=self.items_per_tag + len(bought)
            )
            for tag, items in zip(missing, found, strict=True):
                self._items[tag] = (now + ITEMS_MEMO_S, items)
        tags = [
            t.model_copy(
                update={"items": [i for i in self._items[t.tag][1] if i not in bought][: self.items_per_tag]}
            )
            for t in record.tags
        ]
        return record.model_copy(
            update={"tags": tags, "co_viewed": co_viewed, "category_popular": category_popular}
        )

    def _bestsellers_of(self, catalog: Catalog, category: str, record: IntentRecord, now: float) -> list[str]:
        """``category``'s most popular items as of ``record``'s newest event, enough to leave
        a context's recent ones out, remembered for ``ITEMS_MEMO_S``."""
        memo = self._bestsellers.get(category)
        if memo is None or memo[0] < now:
            if len(self._bestsellers) > 100_000:
                self._bestsellers.clear()
            found = catalog.bestsellers(
                category, record.event_time.timestamp(), self.category_popular + self.shape.recent
            )
            memo = self._bestsellers[category] = (now + ITEMS_MEMO_S, found)
        return memo[1]

    async def cached(self, ctxs: Sequence[UserContext]) -> dict[str, CachedTag]:
        """The plan cache's entries for the heaviest facets of ``ctxs`` (those an entry
        beside the LLM tags can be about)."""
        if self.cache is None:
            return {}
        reach = 2 * self.live_tags + 2
        keys = [interest_key(f.text) for ctx in ctxs for f in facets(ctx, self.shape, self.entities)[:reach]]
        return await self.cache.get(keys)

    async def write_live(self, ctxs: Sequence[UserContext], now: datetime) -> LiveOutcome:
        """One new version for each of ``ctxs`` whose context is newer than its record."""
        out = LiveOutcome()
        pending = {ctx.user_id: ctx for ctx in ctxs}
        cached = await self.cached(ctxs)
        for _ in range(ATTEMPTS):
            users = list(pending)
            records: list[IntentRecord] = []
            for ctx, stored in zip(pending.values(), await self.store.states(users), strict=True):
                if stored.context_version >= ctx.version:
                    out.unchanged += 1
                    continue
                record = compose(
                    ctx, stored.plan, version=stored.version + 1, now=now, shape=self.shape,
                    entities=self.entities, live_tags=self.live_tags, cached=cached, vet=self.vet,
                )  # fmt: skip
                if record is None:
                    out.unchanged += 1
                else:
                    records.append(self.with_items(record, ctx))
            flags = await self.store.write_many(records, now) if records else []
            refused = [r.user_id for r, ok in zip(records, flags, strict=True) if not ok]
            out.written += len(records) - len(refused)
            out.conflicts += len(refused)
            pending = {user: pending[user] for user in refused}
            if not pending:
                return out
        out.gave_up = len(pending)
        out.conflicts -= len(pending)
        log.warning("%d live records still refused after %d rounds; the next change writes them",
                    len(pending), ATTEMPTS)  # fmt: skip
        return out

    async def land_plan(self, plan: LLMPlan, now: datetime) -> IntentRecord | None:
        """Keep ``plan`` and merge it into the user's record. Returns the record written, or
        None when a plan made from the same or a newer context is already there."""
        for _ in range(ATTEMPTS):
            [stored] = await self.store.states([plan.user_id], records=True)
            if stored.plan_version >= plan.context_version:
                return None
            current = None
            if stored.record is not None:
                try:
                    current = parse_record(plan.user_id, stored.record)
                except CorruptRecord as exc:
                    log.warning("%s; replaced by the new plan", exc)
            record = merge_plan(
                current, plan, version=stored.version + 1, entities=self.entities,
                similarity=self.shape.join_similarity, live_tags=self.live_tags,
            )  # fmt: skip
            if current is not None:  # the stream's items follow the user; the plan keeps them
                record = record.model_copy(
                    update={"co_viewed": current.co_viewed, "category_popular": current.category_popular}
                )
            record = self.with_items(record)
            if await self.store.write(record, now, plan=plan):
                return record
        log.warning("plan for user %r refused %d times by newer writes; dropped", plan.user_id, ATTEMPTS)
        return None
