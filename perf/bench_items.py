"""``intentstream bench items``: the item catalog (``stream.catalog``) at scale, and the items
a feed server reads.

In one run, on this machine:

* **catalog build**: a synthetic catalog of ``--items`` items (texts, categories and brands
  drawn with a fixed seed from vocabularies of realistic size) folded into a ``Catalog`` as
  the worker folds its feed, in batches: items per second, and the process's resident memory
  before and after, per item;
* **co-viewed pairs**: ``--items`` × 8 random pairs folded in as the feed folds them
  (``Catalog.co_view``), so every item holds about its ``NEIGHBOURS`` partners (the worst
  case for memory): pairs per second, and the memory they add per item;
* **candidates**: a batch of users' tags (5 each) looked up at once, as a batch's records
  are: tags and users per second; the HNSW search against an exact scan of the same vectors
  (the baseline, ``numpy`` over every item) per query;
* **lookup through the reader** on a real redis-server: ``IntentReader.items(user, 30)`` for
  single users one after another (records written with their tags' items, the items
  co-viewed with three recent items and the most popular of the newest one's category, by
  the worker's own ``RecordWriter.with_items``), p50
  and p99, against ``IntentReader.get`` of records of the
  same users without items (the baseline, the same run).
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, TypeVar

import numpy as np

from intentstream.deploy import stack
from intentstream.progress import Meter, say
from intentstream.reader import IntentReader
from intentstream.schemas.record import IntentRecord, IntentTag
from intentstream.store import IntentStore, connect
from intentstream.stream.catalog import Catalog, Sighting, tag_vector
from intentstream.stream.context import ContextShape, UserContext
from intentstream.stream.records import RecordWriter

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 10_000
T = TypeVar("T")
PAIRS_PER_ITEM = 8


def _rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


class Synthetic:
    """Items and tags drawn from fixed vocabularies (the seed makes the catalog the same
    every run): 5,000 words, 2,000 three-level categories, 1,000 brands."""

    def __init__(self, seed: int = 20_261_201) -> None:
        self.rng = random.Random(seed)
        syllables = [
            "ka",
            "lo",
            "mi",
            "ren",
            "sto",
            "va",
            "pel",
            "dor",
            "qui",
            "sen",
            "tar",
            "bu",
            "fen",
            "gri",
        ]
        self.words = list(
            dict.fromkeys(
                "".join(self.rng.choices(syllables, k=self.rng.randint(2, 3))) for _ in range(12_000)
            )
        )[:5000]
        self.categories = [".".join(self.rng.choices(self.words[:400], k=3)) for _ in range(2000)]
        self.brands = self.rng.sample(self.words, 1000)

    def item(self, n: int) -> Sighting:
        category = self.rng.choice(self.categories)
        leaf = category.rsplit(".", 1)[-1]
        text = " ".join([leaf, *self.rng.choices(self.words, k=self.rng.randint(2, 6))])
        weight = float(self.rng.paretovariate(1.2))  # a few items draw most of the attention
        ts = NOW.timestamp() - self.rng.uniform(0, 14 * 86_400)
        return Sighting(f"item-{n}", text, category, self.rng.choice(self.brands), ts, weight)

    def tags(self, n: int) -> list[str]:
        """Tags as the agents and the live path make them: a category leaf with a word or brand."""
        out = []
        for _ in range(n):
            leaf = self.rng.choice(self.categories).rsplit(".", 1)[-1]
            out.append(f"{self.rng.choice(self.brands + self.words[:200])} {leaf}")
        return out


def folded(
    label: str, total: int, draw: Callable[[int], list[T]], fold: Callable[[list[T]], object]
) -> tuple[float, int]:
    """Fold ``total`` things drawn ``BATCH`` at a time (``draw(first)``): the seconds spent in
    ``fold`` alone (drawing synthetic data is not the catalog's cost) and the process's
    resident growth meanwhile."""
    meter = Meter(label, total)
    before = _rss_bytes()
    seconds = 0.0
    for first in range(0, total, BATCH):
        batch = draw(first)
        started = time.perf_counter()
        fold(batch)
        seconds += time.perf_counter() - started
        meter.advance(len(batch))
    meter.close()
    return seconds, _rss_bytes() - before


def memory(grown: int, items: int) -> dict[str, Any]:
    return {
        "memory_bytes": grown,
        "memory_bytes_per_item": round(grown / items) if items else None,
        "memory_gb": round(grown / 2**30, 3),
    }


def build(catalog: Catalog, synthetic: Synthetic, items: int) -> dict[str, Any]:
    seconds, grown = folded(
        "building the catalog", items,
        lambda first: [synthetic.item(n) for n in range(first, min(items, first + BATCH))],
        catalog.add,
    )  # fmt: skip
    return {
        "items": len(catalog),
        "build_s": round(seconds, 1),
        "build_items_per_s": round(items / seconds),
        **memory(grown, items),
    }


def co_view(catalog: Catalog, synthetic: Synthetic) -> dict[str, Any]:
    items = len(catalog)
    pairs = items * PAIRS_PER_ITEM

    def draw(first: int) -> list[tuple[str, str, int]]:
        pick = synthetic.rng.randrange
        return [(f"item-{pick(items)}", f"item-{pick(items)}", 1) for _ in range(min(BATCH, pairs - first))]

    seconds, grown = folded("folding co-viewed pairs", pairs, draw, catalog.co_view)
    return {
        "pairs": pairs,
        "fold_pairs_per_s": round(pairs / seconds) if seconds else None,
        "items_with_partners": len(catalog.co),
        "partners_per_item_mean": round(sum(map(len, catalog.co.values())) / max(1, len(catalog.co)), 1),
        "partners_kept_per_item": catalog.neighbours,
        **memory(grown, items),
    }


def candidates(catalog: Catalog, synthetic: Synthetic, users: int) -> dict[str, Any]:
    tags = synthetic.tags(users * 5)
    now_s = NOW.timestamp()
    started = time.perf_counter()
    found = catalog.candidates(tags, now_s, n=10)
    seconds = time.perf_counter() - started
    # The baseline: an exact scan of every item's vector for the same tags (no index).
    vectors = catalog.index.reconstruct_n(0, len(catalog))
    probe = np.stack([tag_vector(t) for t in tags[:50]])
    scan_started = time.perf_counter()
    for row in probe:
        sims = vectors @ row
        np.argpartition(-sims, 200)[:200]
    scan_ms = (time.perf_counter() - scan_started) / len(probe) * 1000
    return {
        "users": users,
        "tags": len(tags),
        "tags_with_items": sum(1 for f in found if f),
        "candidates_tags_per_s": round(len(tags) / seconds),
        "candidates_users_per_s": round(users / seconds),
        "search_ms_per_tag": round(seconds / len(tags) * 1000, 3),
        "baseline_exact_scan_ms_per_tag": round(scan_ms, 2),
    }


def _percentiles(samples: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.array(samples) * 1000, [50, 99])
    return round(float(p50), 3), round(float(p99), 3)


async def lookups(catalog: Catalog, synthetic: Synthetic, users: int, address: str) -> dict[str, Any]:
    client = connect(address)
    store = IntentStore(client, prefix="bench-items")
    writer = RecordWriter(store, ContextShape(), live_tags=3, catalog=catalog, items_per_tag=10)
    records = []
    for u in range(users):
        tags = [
            IntentTag(tag=t, explanation="Viewed several times.", source="live") for t in synthetic.tags(5)
        ]
        record = IntentRecord(user_id=f"u{u}", version=1, context_version=1, trigger="live", event_time=NOW,
                              planned_at=NOW, model="none", tags=tags)  # fmt: skip
        ctx = UserContext(f"u{u}")  # three recent items: their co-viewed ones, their category's best
        ctx.recent = [
            {
                "action": "view",
                "ts": NOW.timestamp(),
                "text": "",
                "item": f"item-{synthetic.rng.randrange(len(catalog))}",
                "category": synthetic.rng.choice(synthetic.categories),
            }
            for _ in range(3)
        ]
        records.append(writer.with_items(record, ctx))
    await store.write_many(records, NOW)
    plain = IntentStore(client, prefix="bench-items-plain")
    bare = [
        r.model_copy(
            update={
                "tags": [t.model_copy(update={"items": []}) for t in r.tags],
                "co_viewed": [],
                "category_popular": [],
            }
        )
        for r in records
    ]
    await plain.write_many(bare, NOW)
    reader = IntentReader(client, prefix="bench-items")
    baseline = IntentReader(client, prefix="bench-items-plain")
    order = list(range(users))
    random.Random(7).shuffle(order)
    co_viewed = sum(len(r.co_viewed) for r in records)
    category_popular = sum(len(r.category_popular) for r in records)
    with_items, without = [], []
    shown = 0
    for u in order:
        started = time.perf_counter()
        shown += len(await reader.items(f"u{u}", 30))
        with_items.append(time.perf_counter() - started)
        started = time.perf_counter()
        await baseline.get(f"u{u}")
        without.append(time.perf_counter() - started)
    await client.aclose()
    p50, p99 = _percentiles(with_items)
    b50, b99 = _percentiles(without)
    return {
        "users": users,
        "items_per_lookup_mean": round(shown / users, 1),
        "co_viewed_per_record_mean": round(co_viewed / users, 1),
        "category_popular_per_record_mean": round(category_popular / users, 1),
        "lookup_p50_ms": p50,
        "lookup_p99_ms": p99,
        "baseline_get_without_items_p50_ms": b50,
        "baseline_get_without_items_p99_ms": b99,
        "record_bytes_mean": round(
            sum(len(r.encode_written(NOW)) for r in records[:1000]) / min(users, 1000)
        ),
    }


def bench_items(items: int = 1_000_000, users: int = 1000) -> dict[str, Any]:
    """The catalog's build, memory and search at ``items`` items; lookups for ``users``."""
    synthetic = Synthetic()
    catalog = Catalog()
    say(f"building a synthetic catalog of {items:,} items ...")
    built = build(catalog, synthetic, items)
    say("folding co-viewed pairs ...")
    paired = co_view(catalog, synthetic)
    say("looking up candidates ...")
    found = candidates(catalog, synthetic, users)
    with TemporaryDirectory() as tmp:
        redis = stack.start_redis(Path(tmp) / "redis")
        try:
            say("reading items through the reader ...")
            read = asyncio.run(lookups(catalog, synthetic, users, redis.address))
        finally:
            stack.stop(redis)
    return {
        "benchmark": "items",
        "catalog": built,
        "co_viewed": paired,
        "memory_gb_with_co_viewed": round(built["memory_gb"] + paired["memory_gb"], 3),
        "candidates": found,
        "reader": read,
        "targets": {"lookup_p99_ms": 2.0, "memory_gb_at_1m_items": 2.0},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "notes": (
            "Synthetic items from fixed vocabularies (seeded); memory is the process's resident growth "
            "while the catalog was built (faiss HNSW, 16 links, 128-dimension float vectors, and the "
            "Python ids and popularity arrays, each category's rows), then the co-viewed partners' growth "
            "(Python dicts of catalog rows). The reader's lookup is one HGET of the record and the "
            "interleaving of its tags' items with its co-viewed items and its category's most popular, on "
            "a local redis-server over loopback."
        ),
    }
