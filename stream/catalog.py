"""The item catalog, built from the stream: every described item seen in a behaviour event,
embedded once, in a vector index, with its popularity decayed in event time; and the items a
feed can show for each tag of a record (``candidates``).

Shared by all workers through Redis (``CatalogFeed``): each item's description in a hash,
and each worker's popularity counts appended every few seconds to one trimmed Redis stream
that every worker folds, from its beginning, into its own ``Catalog``. So every worker holds
the same items with the same popularity, whichever partitions it owns, and a restarted
worker rebuilds its catalog from Redis.

An item is embedded once, as a bag of its words: the words of its text, of its category path
and of its brand, singular ("kettles" is "kettle"), signed-hashed into ``DIMS`` dimensions
(``item_vector``); a tag is embedded the same way (``tag_vector``), so "electric kettles"
meets every item whose text, category or brand says kettle. (The contexts' own embedding,
``stream.entities.embed``, weighs category paths as features of their own, which a tag's
words cannot name.) The index is faiss's HNSW graph over those vectors: items are added as
they are first seen and a nearest-neighbour search takes well under a millisecond at a
million items, where an exact scan takes tens of milliseconds. The nearest ``POOL`` items
that fit at least ``FIT`` times as well as the best are then ranked by similarity times
``1 + log(1 + popularity)``, popularity decaying with a half-life of ``half_life_s`` since
each sighting, so fresh and popular items go first among those that fit the tag.

Beside the index, the catalog keeps which items people take one after another
(``co_view`` and ``co_viewed``): each item a user touches is paired with the user's previous
``CO_VIEW_WINDOW`` distinct items (``co_view_pairs``, from the context's recent behaviours),
and each item keeps its ``NEIGHBOURS`` most frequent partners, the lightest replaced when a
new one comes. A record carries the items co-viewed with the user's last items beside its
tags' items (``IntentRecord.co_viewed``): what a feed shows next to the user's interests.
The pairs travel through the same feed as popularity, so every worker holds the same counts.
The catalog also knows each category's items (``kinds``), so a record carries the most popular
items now of the category the user is looking at (``bestsellers``,
``IntentRecord.category_popular``).

At hundreds of millions of items, or to spare each worker the memory (``bench items`` measures
it), the same calls can go to a vector search service shared by the workers (Redis's own
vector sets or a vector database).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import orjson
from redis.exceptions import RedisError

from intentstream.schemas.events import BehaviorEvent
from intentstream.store import RedisClient

log = logging.getLogger("intentstream.catalog")

POOL = 200  # nearest items ranked by popularity for each tag
PER_ENTRY = 1000  # popularity rows per feed entry
# An item fits a tag when its similarity is at least this share of the best one's: at 0.5 a
# popular "apple smartphone" outranked every "huawei smartphone" for the tag that names Huawei.
FIT = 0.75
DIMS = 128
Vector = npt.NDArray[np.float32]
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
HALF_LIFE_S = 3 * 86_400.0  # popularity's half-life, in event time
ACTION_WEIGHT = {"view": 1.0, "click": 1.0, "search": 0.0, "favourite": 2.0, "cart": 3.0, "purchase": 5.0}
ITEMS_PER_TAG = 10
CO_VIEW_WINDOW = 3  # an item is paired with each of the user's previous 3 distinct items
NEIGHBOURS = 16  # partners kept per item, the most frequent
CO_VIEWED_ITEMS = 30  # co-viewed items a record carries
CATEGORY_POPULAR_ITEMS = 30  # the last category's most popular items a record carries


@dataclass(frozen=True, slots=True)
class Sighting:
    """An item as one batch saw it: its description and how much attention it got."""

    item_id: str
    text: str
    category: str | None
    brand: str | None
    ts: float  # the newest event time it was seen at (epoch seconds)
    weight: float  # sum of the actions' weights in the batch
    price: float | None = None  # the newest price seen


def singular(word: str) -> str:
    """English plural to singular, for matching only ("boxes" "box", "berries" "berry")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ses", "xes", "zes", "ches", "shes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words_of(*texts: str | None) -> list[str]:
    """The distinct singular words of ``texts`` (no single letters, no bare numbers)."""
    found: dict[str, None] = {}
    for text in texts:
        for word in _WORD.findall((text or "").casefold()):
            if len(word) > 1 and not word.isdigit():
                found[singular(word)] = None
    return list(found)


def _hashed(words: Sequence[str]) -> Vector:
    vector = np.zeros(DIMS, dtype=np.float32)
    for word in words:
        digest = int.from_bytes(blake2b(word.encode(), digest_size=8).digest(), "little")
        vector[digest % DIMS] += 1.0 if digest >> 63 else -1.0
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def item_vector(text: str, category: str | None, brand: str | None) -> Vector:
    """An item as the words of its text, its category path and its brand."""
    return _hashed(words_of(text, (category or "").replace(".", " "), brand))


def tag_vector(tag: str) -> Vector:
    return _hashed(words_of(tag))


def sightings(events: Iterable[BehaviorEvent]) -> list[Sighting]:
    """One sighting per described item of ``events`` (undescribed items cannot be matched
    to a tag and are left out)."""
    seen: dict[str, Sighting] = {}
    for e in events:
        if not e.item_id or not e.item_text:
            continue
        weight = ACTION_WEIGHT.get(e.action.value, 1.0)
        before = seen.get(e.item_id)
        seen[e.item_id] = Sighting(
            e.item_id, e.item_text, e.category, e.brand,
            max(e.ts.timestamp(), before.ts if before else -math.inf),
            weight + (before.weight if before else 0.0),
            e.price if e.price is not None else (before.price if before else None),
        )  # fmt: skip
    return list(seen.values())


def recent_items(recent: Sequence[Mapping[str, Any]], window: int = CO_VIEW_WINDOW) -> list[str]:
    """The user's last ``window`` distinct items, newest first, from a context's recent
    behaviours (``UserContext.recent``, oldest first; searches carry no item)."""
    out: list[str] = []
    for b in reversed(recent):
        item = b.get("item")
        if item and item not in out:
            out.append(item)
            if len(out) == window:
                break
    return out


def latest_category(recent: Sequence[Mapping[str, Any]]) -> str | None:
    """The category of the newest item among a context's recent behaviours (searches
    and items without a category skipped), or None."""
    return next((b["category"] for b in reversed(recent) if b.get("item") and b.get("category")), None)


def co_view_pairs(recent: Sequence[Mapping[str, Any]], event: BehaviorEvent) -> list[tuple[str, str]]:
    """The pairs ``event`` makes with the user's previous items (``recent`` as the context
    held it before the event): none for a search or an item without a description."""
    if not event.item_id or not event.item_text or event.query:
        return []
    return [(before, event.item_id) for before in recent_items(recent) if before != event.item_id]


class Catalog:
    """Items, their vectors in an HNSW index and their decayed popularity (one worker's copy)."""

    def __init__(self, *, half_life_s: float = HALF_LIFE_S, links: int = 16, ef_search: int = 64) -> None:
        self.half_life_s = half_life_s
        faiss.omp_set_num_threads(1)  # the worker is one event loop; spinning threads only steal its core
        self.index = faiss.IndexHNSWFlat(DIMS, links, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efSearch = ef_search
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.prices: dict[int, float] = {}  # row -> the price it was described with (when it had one)
        # Words that name what items are (brands, category paths): an explanation may name
        # one only where its tag's items do (the judge's check, ``agents.judge``).
        self.entities: set[str] = set()
        self._pop = np.zeros(1024, dtype=np.float64)  # popularity as of _pop_at
        self._pop_at = np.zeros(1024, dtype=np.float64)
        self.neighbours = NEIGHBOURS
        self.co: dict[int, dict[int, int]] = {}  # row -> partner row -> times taken together
        self.kinds: dict[str, list[int]] = {}  # category path -> its items' rows

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, seen: Iterable[Sighting]) -> int:
        """Fold sightings in: new items embedded and indexed, popularity updated. Returns
        how many items were new."""
        fresh: list[Vector] = []
        rows: list[int] = []
        stamps: list[float] = []
        weights: list[float] = []
        for s in seen:
            row = self.rows.get(s.item_id)
            if row is None:
                row = self.rows[s.item_id] = len(self.ids)
                self.ids.append(s.item_id)
                if s.price is not None:
                    self.prices[row] = s.price
                if s.category:
                    self.kinds.setdefault(s.category, []).append(row)
                self.entities.update(words_of((s.category or "").replace(".", " "), s.brand))
                fresh.append(item_vector(s.text, s.category, s.brand))
            rows.append(row)
            stamps.append(s.ts)
            weights.append(s.weight)
        self._grow(len(self.ids))
        self._fold(np.array(rows, dtype=np.int64), np.array(stamps), np.array(weights))
        if fresh:
            self.index.add(np.stack(fresh))
        return len(fresh)

    def _fold(
        self, rows: npt.NDArray[np.int64], stamps: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]
    ) -> None:
        """Add ``weights`` seen at ``stamps`` to the rows' popularity, decayed to the newer
        of the row's time and the sighting's (an item twice in one call: in turn)."""
        if not len(rows):
            return
        _, first = np.unique(rows, return_index=True)
        once = np.zeros(len(rows), dtype=bool)
        once[first] = True
        r = rows[once]
        at = np.maximum(self._pop_at[r], stamps[once])
        self._pop[r] = self._pop[r] * self._decay(at - self._pop_at[r]) + weights[once]
        self._pop_at[r] = at
        self._fold(rows[~once], stamps[~once], weights[~once])

    def _grow(self, size: int) -> None:
        if size > len(self._pop):
            grown = max(size, 2 * len(self._pop))
            self._pop = np.resize(self._pop, grown)
            self._pop_at = np.resize(self._pop_at, grown)

    def _decay(self, seconds: npt.ArrayLike) -> npt.NDArray[np.float64]:
        return np.exp2(-np.maximum(np.asarray(seconds, dtype=np.float64), 0.0) / self.half_life_s)

    def popularity(self, rows: npt.ArrayLike, now_s: float) -> npt.NDArray[np.float64]:
        """The items' popularity decayed to ``now_s``."""
        at = np.asarray(rows, dtype=np.int64)
        return self._pop[at] * self._decay(now_s - self._pop_at[at])

    def candidates(
        self, texts: Sequence[str], now_s: float, *, n: int = ITEMS_PER_TAG, exclude: Iterable[str] = ()
    ) -> list[list[str]]:
        """For each text (a tag), the ``n`` items that fit it best: the nearest ``POOL`` by
        embedding, ranked by similarity times ``1 + log(1 + popularity now)``; items in
        ``exclude`` and items that share nothing with the text are left out."""
        if not texts or not self.ids:
            return [[] for _ in texts]
        skip = {self.rows[i] for i in exclude if i in self.rows}
        vectors = np.stack([tag_vector(t) for t in texts])
        sims, found = self.index.search(vectors, min(len(self.ids), POOL + len(skip)))
        out: list[list[str]] = []
        for row_sims, rows in zip(sims, found, strict=True):
            best = max((float(s) for s, r in zip(row_sims, rows, strict=True) if r >= 0), default=0.0)
            keep = [(float(s), int(r)) for s, r in zip(row_sims, rows, strict=True)
                    if r >= 0 and s > 0 and s >= FIT * best and int(r) not in skip]  # fmt: skip
            if not keep:
                out.append([])
                continue
            pop = self.popularity([r for _, r in keep], now_s)
            scores = np.array([s for s, _ in keep]) * (1.0 + np.log1p(pop))
            order = np.argsort(-scores, kind="stable")[:n]
            out.append([self.ids[keep[i][1]] for i in order])
        return out

    def co_view(self, pairs: Iterable[tuple[str, str, int]]) -> int:
        """Count ``(item, item, times)`` pairs both ways; pairs with an item the catalog
        does not hold are skipped. Returns how many were counted."""
        counted = 0
        for a, b, times in pairs:
            ra, rb = self.rows.get(a), self.rows.get(b)
            if ra is None or rb is None or ra == rb:
                continue
            self._partner(ra, rb, times)
            self._partner(rb, ra, times)
            counted += 1
        return counted

    def _partner(self, row: int, other: int, times: int) -> None:
        partners = self.co.get(row)
        if partners is None:
            self.co[row] = {other: times}
        elif other in partners:
            partners[other] += times
        else:
            if len(partners) >= self.neighbours:
                del partners[min(partners, key=partners.__getitem__)]  # the lightest makes room
            partners[other] = times

    def co_viewed(
        self, items: Sequence[str], n: int = CO_VIEWED_ITEMS, *, exclude: Iterable[str] = ()
    ) -> list[str]:
        """The ``n`` items most often taken together with ``items`` (their counts added up),
        ``items`` and ``exclude`` left out; ties in the order of ``items``."""
        skip = {self.rows[i] for i in (*items, *exclude) if i in self.rows}
        total: dict[int, int] = {}
        for item in items:
            for row, times in self.co.get(self.rows.get(item, -1), {}).items():
                if row not in skip:
                    total[row] = total.get(row, 0) + times
        best = sorted(total, key=total.__getitem__, reverse=True)[:n]
        return [self.ids[row] for row in best]

    def bestsellers(self, category: str, now_s: float, n: int, *, exclude: Iterable[str] = ()) -> list[str]:
        """The ``n`` most popular items now of ``category`` (its exact path), ``exclude``
        left out; none for a category the catalog has no item of."""
        rows = self.kinds.get(category)
        return self.popular(now_s, n, exclude=exclude, rows=rows) if rows else []

    def popular(
        self, now_s: float, n: int, *, exclude: Iterable[str] = (), rows: Iterable[int] | None = None
    ) -> list[str]:
        """The ``n`` most popular items now (of ``rows`` when given), ``exclude`` left out."""
        chosen = np.arange(len(self.ids)) if rows is None else np.fromiter(rows, dtype=np.int64)
        if not len(chosen):
            return []
        skip = set(exclude)
        pop = self.popularity(chosen, now_s)
        out = []
        for i in np.argsort(-pop, kind="stable"):
            item = self.ids[int(chosen[i])]
            if item not in skip:
                out.append(item)
                if len(out) == n:
                    break
        return out


class CatalogFeed:
    """The catalog's shared state in Redis, bounded whatever the event rate:

    * ``{prefix}:catalog:items``, a hash: item id to its description, ``[text, category,
      brand, price]`` as JSON, written by the first worker that sees the item;
    * ``{prefix}:catalog``, a stream of popularity: each worker adds up what its batches saw
      (``observe``) and appends it every ``flush_s`` seconds (``flush``) as ``[id, newest
      event time, weight]`` rows, ``PER_ENTRY`` to an entry; entries older than ``window_s``
      (two half-lives by default) are trimmed. The same flush appends the pairs of items
      its users took one after another (``observe_pairs``) as ``[id, id, times]`` rows,
      ``PER_ENTRY`` to an entry of their own (field ``c``), folded by ``Catalog.co_view``.

    Every worker folds the stream from its beginning (``follow``); an item it does not know yet
    is described from the hash. So all workers hold the same catalog, and a restarted worker
    knows every item seen within the window (older ones had lost three quarters of their
    popularity; they come back when seen again). What a worker observes it folds into its own
    catalog at once, so the records of the same batch can offer the items it just saw; its
    entries carry its ``writer`` id, and it skips them when it reads them back. A Redis failure
    delays a flush, never loses what it held, and never stops the worker."""

    def __init__(
        self, client: RedisClient, prefix: str, *, window_s: float = 2 * HALF_LIFE_S, flush_s: float = 10.0
    ) -> None:
        self.client = client
        self.stream = f"{prefix}:catalog"
        self.items_key = f"{prefix}:catalog:items"
        self.window_s = window_s
        self.flush_s = flush_s
        self.last_id = "0"
        self.skipped = 0  # entries or rows that were not ours, or items with no description
        self.pending: dict[str, tuple[float, float]] = {}  # item -> (newest event time, weight)
        self.new: dict[str, bytes] = {}  # descriptions for the hash at the next flush
        self.pairs: dict[tuple[str, str], int] = {}  # co-viewed pairs for the next flush
        self._described: set[str] = set()  # items this worker described already
        self.writer = secrets.token_hex(8)  # marks this feed's entries (a restart makes a new one)
        self._mine = self.writer.encode()

    def observe(self, seen: Iterable[Sighting], known: Catalog) -> None:
        """Add a batch's sightings to what the next flush appends, and fold them into
        ``known`` at once (no I/O)."""
        seen = list(seen)
        for s in seen:
            ts, weight = self.pending.get(s.item_id, (s.ts, 0.0))
            self.pending[s.item_id] = (max(ts, s.ts), weight + s.weight)
            if s.item_id not in known.rows and s.item_id not in self._described:
                if len(self._described) > 1_000_000:
                    self._described.clear()
                self._described.add(s.item_id)
                self.new[s.item_id] = orjson.dumps([s.text, s.category, s.brand, s.price])
        known.add(seen)

    def observe_pairs(self, pairs: Iterable[tuple[str, str]], known: Catalog) -> None:
        """Add a batch's co-viewed pairs (``co_view_pairs``) to the next flush, and fold them
        into ``known`` at once, after the batch's items (``observe``) (no I/O)."""
        pairs = list(pairs)
        for pair in pairs:
            self.pairs[pair] = self.pairs.get(pair, 0) + 1
        known.co_view((a, b, 1) for a, b in pairs)

    async def flush(self) -> int:
        """Append what was observed since the last flush; returns how many items. On a Redis
        error what was observed is kept for the next flush, and the error raised."""
        if not self.pending and not self.pairs:
            return 0
        pending, new, pairs = self.pending, self.new, self.pairs
        self.pending, self.new, self.pairs = {}, {}, {}
        rows = [[item, ts, weight] for item, (ts, weight) in pending.items()]
        together = [[a, b, times] for (a, b), times in pairs.items()]
        oldest = f"{max(0, int((time.time() - self.window_s) * 1000))}-0"
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                if new:
                    pipe.hset(self.items_key, mapping=new)  # type: ignore[arg-type]
                for first in range(0, len(rows), PER_ENTRY):
                    chunk = orjson.dumps(rows[first : first + PER_ENTRY])
                    pipe.xadd(self.stream, {"s": chunk, "w": self.writer}, minid=oldest, approximate=True)
                for first in range(0, len(together), PER_ENTRY):  # after the items they name
                    chunk = orjson.dumps(together[first : first + PER_ENTRY])
                    pipe.xadd(self.stream, {"c": chunk, "w": self.writer}, minid=oldest, approximate=True)
                await pipe.execute()
        except Exception:
            for item, (ts, weight) in pending.items():  # put back, merged with what came since
                before = self.pending.get(item, (ts, 0.0))
                self.pending[item] = (max(ts, before[0]), weight + before[1])
            self.new = new | self.new
            for pair, times in pairs.items():
                self.pairs[pair] = self.pairs.get(pair, 0) + times
            raise
        return len(rows)

    async def read(self, catalog: Catalog, block_ms: int | None = None, count: int = 1000) -> int:
        """Fold the entries after the last one read into ``catalog``; returns how many
        entries were read."""
        reply: Any = await self.client.xread({self.stream: self.last_id}, block=block_ms, count=count)
        increments: list[tuple[str, float, float]] = []
        pairs: list[tuple[str, str, int]] = []
        read = 0
        for _stream, entries in reply or []:
            read += len(entries)
            for entry_id, fields in entries:
                self.last_id = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                if fields.get(b"w") == self._mine:
                    continue  # this feed's own: folded when it was observed
                field_name, parse = (b"c", pair) if b"c" in fields else (b"s", increment)
                try:
                    rows = orjson.loads(fields[field_name])
                except (KeyError, orjson.JSONDecodeError):
                    self.skipped += 1  # not ours: someone else's entry
                    continue
                found: list[Any] = pairs if field_name == b"c" else increments
                for row in rows if isinstance(rows, list) else [rows]:
                    try:
                        found.append(parse(row))
                    except ValueError:
                        self.skipped += 1
        if increments:
            catalog.add(await self._described_sightings(catalog, increments))
        if pairs:
            catalog.co_view(pairs)  # after the items: a pair's items came in earlier entries
        return read

    async def _described_sightings(
        self, catalog: Catalog, increments: list[tuple[str, float, float]]
    ) -> list[Sighting]:
        """The increments as sightings; items new to ``catalog`` described from the hash
        (an item with no readable description is skipped and counted)."""
        unknown = list(dict.fromkeys(i for i, _, _ in increments if i not in catalog.rows))
        described: dict[str, tuple[str, str | None, str | None, float | None]] = {}
        if unknown:
            raws: list[bytes | str | None] = await self.client.hmget(self.items_key, unknown)
            for item, raw in zip(unknown, raws, strict=True):
                with contextlib.suppress(ValueError):
                    described[item] = description(raw)
        out = []
        for item, ts, weight in increments:
            if item in catalog.rows:
                out.append(Sighting(item, "", None, None, ts, weight))  # known: popularity only
            elif (found := described.get(item)) is not None:
                out.append(Sighting(item, found[0], found[1], found[2], ts, weight, found[3]))
            else:
                self.skipped += 1
        return out

    async def follow(self, catalog: Catalog, poll_ms: int = 200) -> None:
        """Fold the feed into ``catalog`` for ever (the existing entries first)."""
        caught_up = False
        while not caught_up:
            caught_up = await self.read(catalog) == 0
        log.info("catalog: %d items from %s", len(catalog), self.stream)
        while True:
            await self.read(catalog, block_ms=poll_ms)

    async def flush_every(self) -> None:
        """``flush`` every ``flush_s`` seconds, for ever; a Redis error is logged and the
        next flush carries what this one held."""
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except (RedisError, OSError) as exc:
                log.warning("catalog flush failed (%s); kept for the next one", exc)


def increment(row: object) -> tuple[str, float, float]:
    """A popularity row of the feed, ``[item id, event time, weight]``; ValueError if not."""
    if not isinstance(row, list) or len(row) != 3:
        raise ValueError("a popularity row is [item id, event time, weight]")
    item, ts, weight = row
    if not isinstance(item, str) or not item or len(item) > 128:
        raise ValueError("an item id is a string of 1-128 characters")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (ts, weight)):
        raise ValueError("an event time and a weight are numbers")
    if not (math.isfinite(ts) and math.isfinite(weight)) or weight < 0:
        raise ValueError("an event time and a weight are finite, the weight not negative")
    return item, float(ts), float(weight)


def pair(row: object) -> tuple[str, str, int]:
    """A co-viewed row of the feed, ``[item id, item id, times]``; ValueError if not."""
    if not isinstance(row, list) or len(row) != 3:
        raise ValueError("a co-viewed row is [item id, item id, times]")
    a, b, times = row
    if not all(isinstance(i, str) and 0 < len(i) <= 128 for i in (a, b)):
        raise ValueError("an item id is a string of 1-128 characters")
    if isinstance(times, bool) or not isinstance(times, int) or not 0 < times <= 1_000_000:
        raise ValueError("times is a whole number from 1 to 1,000,000")
    return a, b, times


def description(raw: bytes | str | None) -> tuple[str, str | None, str | None, float | None]:
    """An item's description from the hash, ``[text, category, brand, price]``; ValueError
    if not."""
    if raw is None:
        raise ValueError("no description")
    try:
        found = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError("a description is JSON") from exc
    if not isinstance(found, list) or len(found) != 4:
        raise ValueError("a description is [text, category, brand, price]")
    text, category, brand, price = found
    if not isinstance(text, str) or not all(v is None or isinstance(v, str) for v in (category, brand)):
        raise ValueError("a description's parts are strings (category and brand may be null)")
    if price is not None and (
        isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price < 0
    ):
        raise ValueError("a description's price is a finite number of at least 0, or null")
    return text[:512], (category or "")[:256] or None, (brand or "")[:64] or None, price
