"""A user's compressed context: the functional core the stream worker keeps per user.

Plain data and plain functions, tested without Kafka. Bounded whatever the history length
(a hybrid representation, after RecGPT V2):

* ``recent``: the last few behaviours in full;
* ``interests``: older behaviours folded into interest clusters. Each item or query is
  embedded once (``stream.entities``, cached by item id) and joins the most similar cluster,
  or founds one; a cluster keeps a representative text, counts by action, a recency-decayed
  weight and a price band. Beyond ``max_interests`` the two most similar clusters merge;
* ``kinds``: the lasting profile, what the user does over their whole history: per kind of
  item (the leaf of its category path) exact counts by action since the kind was first
  kept, and a weight decayed with a long half-life. The ``max_kinds`` heaviest are kept
  (a new kind replaces the lightest and counts from then on: counts are never estimated);
* profile facts: region, first and newest event time, counts by action;
* ``interest``: a recency-decayed sum of entity vectors, updated in O(1) per event;
* ``planned``: the texts the last re-plan request asked the LLM about (what is *new* is
  decided against them, ``stream.live``);
* idempotence: a per-partition offset watermark (exact, for redeliveries after a crash) and
  a bounded set of event-id hashes (for the same events published twice).

Every update is incremental: one event touches one context, never the history.
"""

from __future__ import annotations

import base64
import math
import zlib
from array import array
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from intentstream.schemas.events import ACTION_WEIGHT, BehaviorEvent, EnvSignal
from intentstream.schemas.record import ActiveSignal, Interest, RecentBehavior, ReplanRequest
from intentstream.stream.entities import DIMS, EntityCache, Vector

HALF_LIFE_S = 3600.0
LASTING_HALF_LIFE_S = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class ContextShape:
    """The bounds and constants of a context (from the settings)."""

    recent: int = 6  # behaviours kept in full
    max_interests: int = 12
    seen_ids: int = 128  # event-id hashes kept for duplicate detection
    join_similarity: float = 0.55  # cosine at or above which an entity joins a cluster
    half_life_s: float = HALF_LIFE_S  # event-time half-life of interest weights
    max_kinds: int = 16  # kinds of item kept in the lasting profile
    lasting_half_life_s: float = LASTING_HALF_LIFE_S  # event-time half-life of a kind's weight
    # What a lasting kind weighs against what the user does now: its share of the lasting
    # profile times this times the facets' weight now (``stream.live``).
    lasting_share: float = 0.5


@dataclass(slots=True)
class InterestCluster:
    text: str  # the representative: the entity that founded the cluster
    category: str | None
    brand: str | None
    counts: dict[str, int]
    weight: float  # decayed to ``updated_ts``
    updated_ts: float
    price_low: float | None = None
    price_high: float | None = None


@dataclass(slots=True)
class LastingKind:
    """One kind of item in the lasting profile."""

    counts: dict[str, int]  # exact, since ``first_ts``
    weight: float  # decayed with the lasting half-life to ``updated_ts``
    updated_ts: float
    first_ts: float


@dataclass(slots=True)
class UserContext:
    """Everything the planner needs to know about one user, kept small."""

    user_id: str
    version: int = 0  # bumped by every applied event: the plan version derives from it
    region: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    recent: list[dict[str, Any]] = field(default_factory=list)  # RecentBehavior dicts, oldest first
    interests: list[InterestCluster] = field(default_factory=list)
    first_event_ts: float = 0.0
    newest_event_ts: float = 0.0  # epoch seconds of the newest behaviour applied
    interest: Vector = field(default_factory=lambda: np.zeros(DIMS, np.float32))
    interest_ts: float = 0.0  # event time ``interest`` is decayed to
    seen: list[int] = field(default_factory=list)  # event-id hashes, oldest first
    offsets: dict[str, int] = field(default_factory=dict)  # partition -> last applied offset
    # The re-plan bookkeeping.
    events_since_plan: int = 0
    last_replan_at: float = 0.0  # processing time of the last re-plan request
    planned: list[str] = field(default_factory=list)  # texts the last request asked about
    signals_seen: list[str] = field(default_factory=list)  # signal ids that already re-planned
    kinds: dict[str, LastingKind] = field(default_factory=dict)  # the lasting profile, by kind
    # Not serialized: the interest clusters' vectors, one row each, rebuilt when needed; and
    # views derived from the context, each stored with the version it was derived at
    # (``stream.live.facets``).
    cluster_matrix: Vector | None = field(default=None, repr=False, compare=False)
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def copy(self) -> UserContext:
        """An independent copy (what an update may change is copied, not shared). Built
        field by field: the batch path copies each user it touches, so this is on the hot
        path (about 3x faster than ``dataclasses.replace``)."""
        return UserContext(
            self.user_id,
            self.version,
            self.region,
            dict(self.counts),
            list(self.recent),  # behaviours are replaced, never edited
            [
                InterestCluster(
                    c.text,
                    c.category,
                    c.brand,
                    dict(c.counts),
                    c.weight,
                    c.updated_ts,
                    c.price_low,
                    c.price_high,
                )
                for c in self.interests
            ],
            self.first_event_ts,
            self.newest_event_ts,
            self.interest.copy(),
            self.interest_ts,
            list(self.seen),
            dict(self.offsets),
            self.events_since_plan,
            self.last_replan_at,
            list(self.planned),
            list(self.signals_seen),
            {k: replace(v, counts=dict(v.counts)) for k, v in self.kinds.items()},
        )

    def reset(self, other: UserContext) -> None:
        """Become ``other`` in place (whoever holds this object sees the change)."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "user_id": self.user_id,
                "version": self.version,
                "region": self.region,
                "counts": self.counts,
                "recent": self.recent,
                "interests": self.interests,  # orjson writes dataclasses natively
                "first_event_ts": self.first_event_ts,
                "newest_event_ts": self.newest_event_ts,
                "interest": _pack_vector(self.interest),
                "interest_ts": self.interest_ts,
                "seen": base64.b64encode(array("Q", self.seen).tobytes()).decode(),
                "offsets": self.offsets,
                "events_since_plan": self.events_since_plan,
                "last_replan_at": self.last_replan_at,
                "planned": self.planned,
                "signals_seen": self.signals_seen,
                "kinds": self.kinds,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> UserContext:
        data = orjson.loads(raw)
        data["interests"] = [InterestCluster(**c) for c in data["interests"]]
        data["interest"] = _unpack_vector(data["interest"])
        data.pop("plan_interest", None)  # written before ``planned`` replaced it
        data["seen"] = array("Q", base64.b64decode(data["seen"])).tolist()
        data["kinds"] = {k: LastingKind(**v) for k, v in data.get("kinds", {}).items()}  # none before 12/2026
        return cls(**data)


def _pack_vector(v: Vector) -> str:
    return base64.b64encode(v.astype(np.float16).tobytes()).decode()


def _unpack_vector(text: str) -> Vector:
    return np.frombuffer(base64.b64decode(text), dtype=np.float16).astype(np.float32)


def event_hash(event_id: str) -> int:
    """64 bits, stable across processes: CRC-32 and Adler-32 side by side (cheap, and with
    128 ids kept per user a false "duplicate" is about one in 10^17)."""
    raw = event_id.encode()
    return zlib.crc32(raw) << 32 | zlib.adler32(raw)


def _entity_key(b: dict[str, Any]) -> str:
    item: str | None = b.get("item")
    return item or "t:" + b["text"]


def _decay(half_life_s: float, dt: float) -> float:
    return math.exp2(-max(dt, 0.0) / half_life_s)


def apply_event(
    ctx: UserContext,
    event: BehaviorEvent,
    shape: ContextShape,
    entities: EntityCache,
    position: tuple[int, int] | None = None,
    sequence: list[Vector] | None = None,
) -> bool:
    """Fold one behaviour into ``ctx`` in place. ``position`` is the message's (partition,
    offset). Returns False, changing nothing, for a message or event already applied. The
    event's entity vector, when it has one, is appended to ``sequence`` (the worker grows the
    user's behaviour sequence in the entity pool with it)."""
    if position is not None:
        partition, offset = str(position[0]), position[1]
        if offset <= ctx.offsets.get(partition, -1):
            return False
        ctx.offsets[partition] = offset
    digest = event_hash(event.event_id)
    if digest in ctx.seen:
        return False
    ctx.seen.append(digest)
    if len(ctx.seen) > shape.seen_ids:
        del ctx.seen[0]
    action = event.action.value
    ctx.version += 1
    ctx.events_since_plan += 1
    ctx.counts[action] = ctx.counts.get(action, 0) + 1
    if event.region:
        ctx.region = event.region
    ts = event.ts.timestamp()
    ctx.first_event_ts = min(ctx.first_event_ts, ts) if ctx.first_event_ts else ts
    if ts > ctx.newest_event_ts:
        ctx.newest_event_ts = ts

    behaviour = behaviour_of(event)
    vector = event_entity(event, entities)
    if vector is not None:
        if sequence is not None:
            sequence.append(vector)
        weight = ACTION_WEIGHT[action]
        if ts >= ctx.interest_ts:
            if ts > ctx.interest_ts:
                ctx.interest *= _decay(shape.half_life_s, ts - ctx.interest_ts)
                ctx.interest_ts = ts
            ctx.interest += weight * vector
        else:  # out of order: add it decayed to where the sum stands
            ctx.interest += (weight * _decay(shape.half_life_s, ctx.interest_ts - ts)) * vector

    if event.category:
        _count_kind(ctx, kind_of(event.category), action, ts, shape)

    recent = ctx.recent
    recent.append(behaviour)
    if len(recent) > 1 and ts < recent[-2]["ts"]:
        recent.sort(key=lambda b: b["ts"])  # keep time order when events arrive late
    while len(recent) > shape.recent:
        _fold(ctx, recent.pop(0), shape, entities)
    return True


KIND_MAX_CHARS = 64


def kind_of(category: str) -> str:
    """The kind of item a category path names: its leaf, read as words
    (``appliances.kitchen.electric_kettle`` → ``electric kettle``), at most
    ``KIND_MAX_CHARS`` (a record's tag is shorter still)."""
    return category.rsplit(".", 1)[-1].replace("_", " ").strip()[:KIND_MAX_CHARS]


def _count_kind(ctx: UserContext, kind: str, action: str, ts: float, shape: ContextShape) -> None:
    if not kind or shape.max_kinds <= 0:
        return
    known = ctx.kinds.get(kind)
    if known is None:
        if len(ctx.kinds) >= shape.max_kinds:  # the lightest now makes room
            at = max(ctx.newest_event_ts, ts)
            del ctx.kinds[
                min(ctx.kinds, key=lambda k: lasting_weight(ctx.kinds[k], at, shape.lasting_half_life_s))
            ]
        known = ctx.kinds[kind] = LastingKind({}, 0.0, ts, ts)
    known.counts[action] = known.counts.get(action, 0) + 1
    known.first_ts = min(known.first_ts, ts)
    weight = ACTION_WEIGHT[action]
    if ts >= known.updated_ts:
        known.weight = known.weight * _decay(shape.lasting_half_life_s, ts - known.updated_ts) + weight
        known.updated_ts = ts
    else:
        known.weight += weight * _decay(shape.lasting_half_life_s, known.updated_ts - ts)


def lasting_weight(kind: LastingKind, at: float, half_life_s: float) -> float:
    """A kind's weight decayed to ``at``."""
    return kind.weight * _decay(half_life_s, at - kind.updated_ts)


def behaviour_of(event: BehaviorEvent) -> dict[str, Any]:
    """An event as ``UserContext.recent`` keeps it (a ``RecentBehavior`` dict)."""
    behaviour: dict[str, Any] = {
        "action": event.action.value,
        "ts": event.ts.timestamp(),
        "text": _text(event),
    }
    if event.category:
        behaviour["category"] = event.category
    if event.brand:
        behaviour["brand"] = event.brand
    if event.price is not None:
        behaviour["price"] = event.price
    if event.item_id and not event.query:
        behaviour["item"] = event.item_id
    return behaviour


def _text(event: BehaviorEvent) -> str:
    return event.query or event.item_text or event.category or event.brand or ""


def event_entity(event: BehaviorEvent, entities: EntityCache) -> Vector | None:
    """The entity vector of an event (its item, or its query), or None when undescribed."""
    text = _text(event)
    if not text:
        return None
    key = event.item_id if event.item_id and not event.query else "t:" + text
    return entities.get(key, text, event.category, event.brand)


def _fold(ctx: UserContext, b: dict[str, Any], shape: ContextShape, entities: EntityCache) -> None:
    """Entity compression: an old behaviour joins its most similar interest cluster."""
    if not b["text"]:
        return  # undescribed items live on only in the counts
    vector = entities.get(_entity_key(b), b["text"], b.get("category"), b.get("brand"))
    matrix = ctx.cluster_matrix
    if matrix is None or len(matrix) != len(ctx.interests):
        matrix = ctx.cluster_matrix = _matrix(ctx, entities)
    best = None
    if len(matrix):
        sims = matrix @ vector
        i = int(np.argmax(sims))
        if sims[i] >= shape.join_similarity:
            best = ctx.interests[i]
    if best is None:
        best = InterestCluster(b["text"], b.get("category"), b.get("brand"), {}, 0.0, b["ts"])
        ctx.interests.append(best)
        ctx.cluster_matrix = np.vstack([matrix, _cluster_vector(best, entities)])
    _add(best, b["action"], ACTION_WEIGHT[b["action"]], b["ts"], b.get("price"), shape)
    if len(ctx.interests) > shape.max_interests:
        _merge_closest(ctx, entities, shape)


def _matrix(ctx: UserContext, entities: EntityCache) -> Vector:
    if not ctx.interests:
        return np.zeros((0, DIMS), np.float32)
    return np.stack([_cluster_vector(c, entities) for c in ctx.interests])


def _add(
    cluster: InterestCluster, action: str, weight: float, ts: float, price: float | None, shape: ContextShape
) -> None:
    cluster.counts[action] = cluster.counts.get(action, 0) + 1
    if ts >= cluster.updated_ts:
        cluster.weight = cluster.weight * _decay(shape.half_life_s, ts - cluster.updated_ts) + weight
        cluster.updated_ts = ts
    else:
        cluster.weight += weight * _decay(shape.half_life_s, cluster.updated_ts - ts)
    if price is not None:
        cluster.price_low = price if cluster.price_low is None else min(cluster.price_low, price)
        cluster.price_high = price if cluster.price_high is None else max(cluster.price_high, price)


def _cluster_vector(cluster: InterestCluster, entities: EntityCache) -> Vector:
    key = f"rep:{cluster.text}\x1f{cluster.category}\x1f{cluster.brand}"
    return entities.get(key, cluster.text, cluster.category, cluster.brand)


def _merge_closest(ctx: UserContext, entities: EntityCache, shape: ContextShape) -> None:
    """Merge the lighter of the two most similar clusters into the heavier one."""
    vectors = _matrix(ctx, entities)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
    keep, gone = sorted((ctx.interests[int(i)], ctx.interests[int(j)]), key=lambda c: -c.weight)
    for action, n in gone.counts.items():
        keep.counts[action] = keep.counts.get(action, 0) + n
    at = max(keep.updated_ts, gone.updated_ts)
    keep.weight = keep.weight * _decay(shape.half_life_s, at - keep.updated_ts) + gone.weight * _decay(
        shape.half_life_s, at - gone.updated_ts
    )
    keep.updated_ts = at
    for price in (gone.price_low, gone.price_high):
        if price is not None:
            keep.price_low = price if keep.price_low is None else min(keep.price_low, price)
            keep.price_high = price if keep.price_high is None else max(keep.price_high, price)
    ctx.interests.remove(gone)
    ctx.cluster_matrix = None


def cosine_distance(a: Vector, b: Vector) -> float:
    """1 - cosine, in [0, 2]; 1.0 when either vector is zero (nothing to compare)."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if not na or not nb:
        return 1.0
    return 1.0 - float(a @ b) / (na * nb)


def signals_for(ctx: UserContext, signals: list[EnvSignal], now: datetime) -> list[ActiveSignal]:
    """The environment signals in force for this user now (their region, or everyone)."""
    return [
        ActiveSignal(kind=s.kind.value, text=s.text, valid_until=s.valid_until)
        for s in signals
        if concerns(s, ctx) and s.active_at(now)
    ]


def concerns(signal: EnvSignal, ctx: UserContext) -> bool:
    return signal.region == "*" or (signal.region is not None and signal.region == ctx.region)


def interest_summaries(ctx: UserContext, limit: int = 6, half_life_s: float = HALF_LIFE_S) -> list[Interest]:
    """The heaviest interest clusters, as of the newest event, heaviest first."""
    ranked = sorted(
        ctx.interests, key=lambda c: -c.weight * _decay(half_life_s, ctx.newest_event_ts - c.updated_ts)
    )
    return [
        Interest(
            text=c.text,
            category=c.category,
            counts=dict(c.counts),
            price_low=c.price_low,
            price_high=c.price_high,
            last_seen=datetime.fromtimestamp(c.updated_ts, UTC),
        )
        for c in ranked[:limit]
    ]


ASKED_TEXT_CHARS = 200  # of each text kept in ``planned``


def asked(ctx: UserContext, shape: ContextShape) -> list[str]:
    """The texts a re-plan request made now asks the LLM about: its recent behaviours and
    interests (``replan_request``); kept in ``UserContext.planned``."""
    texts = [b["text"] for b in ctx.recent if b["text"]]
    texts += [i.text for i in interest_summaries(ctx, half_life_s=shape.half_life_s)]
    return list(dict.fromkeys(t[:ASKED_TEXT_CHARS] for t in texts))


def replan_request(
    ctx: UserContext, *, trigger: str, signals: list[ActiveSignal], now: datetime, shape: ContextShape
) -> ReplanRequest:
    """Snapshot the compressed context for the planners (interests ranked with the shape's
    half-life, the one that decays them)."""
    return ReplanRequest(
        user_id=ctx.user_id,
        context_version=ctx.version,
        trigger=trigger,
        newest_event_time=datetime.fromtimestamp(ctx.newest_event_ts, UTC),
        requested_at=now,
        region=ctx.region,
        counts=dict(ctx.counts),
        recent=[RecentBehavior.model_validate(b) for b in ctx.recent],
        interests=interest_summaries(ctx, half_life_s=shape.half_life_s),
        signals=signals,
    )
