"""The fast path: a user's record follows their behaviour at stream speed, with no LLM.

When a batch changes a user's context, the worker writes one new version of their record:

* the tags of the user's newest LLM plan (``source: llm``), re-ranked by the interest *now*:
  each tag scores the recency-decayed weight of the facets it covers;
* live entries (``source: live``) for the heaviest facets no LLM tag covers: a tag made from
  the facet's own facts (brand and product type, else its text) and a sentence composed by
  code from facts only (what was done how often, the last day, the price band); and, among
  them, kinds of item from the context's lasting profile that nothing in the record shows
  (``lasting``: the kind as the tag, the counts since the kind was kept);
* ranked together by the weight of what each covers now (an LLM tag: the facets it covers; a
  live entry: its facet), the LLM's tag first on a tie, then the LLM tags that cover nothing
  now: a tag about a passing interest does not push down an entry for what the user does
  most.

A *facet* is what the context knows of one interest: interest clusters and recent
behaviours, grouped by embedding. Coverage is decided from embeddings, not words: a facet is
covered by an LLM tag when the vector of its text is within ``join_similarity`` of the
vector of a text the tag cites (the stream's entity embedding of words, ``stream.entities``).

The same facets decide when the LLM is asked again (``novel``): only for a facet with real
weight that no earlier request asked about. Pure functions; the worker, the tests and the
evaluation call these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np

from intentstream.schemas.events import ACTION_DONE, ACTION_WEIGHT, Action
from intentstream.schemas.record import (
    EXPLANATION_MAX_CHARS,
    TAG_MAX_CHARS,
    IntentRecord,
    IntentTag,
    LLMPlan,
    Trigger,
)
from intentstream.schemas.text import plain_text, sentence_text
from intentstream.stream.context import ContextShape, UserContext, kind_of, lasting_weight
from intentstream.stream.entities import EntityCache, Vector
from intentstream.stream.plancache import CachedTag, Vet, facet_price, fill, interest_key

NO_MODEL = "none"  # the ``model`` of a record with live entries only


@dataclass(frozen=True, slots=True)
class Facet:
    """One interest as the context knows it now."""

    text: str
    category: str | None
    brand: str | None
    weight: float  # recency-decayed to the user's newest event
    counts: dict[str, int]
    last_ts: float  # event time of its newest behaviour
    price_low: float | None
    price_high: float | None
    first_ts: float | None = None  # a lasting kind's: counts are since then


@dataclass(slots=True)
class _Gathered:
    text: str  # the first (heaviest kind of) entry's: a cluster's representative, else a behaviour's
    category: str | None
    brand: str | None
    weight: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    last_ts: float = 0.0
    low: float | None = None
    high: float | None = None

    def add(self, weight: float, counts: dict[str, int], ts: float, prices: tuple[float | None, ...]) -> None:
        self.weight += weight
        for action, n in counts.items():
            self.counts[action] = self.counts.get(action, 0) + n
        self.last_ts = max(self.last_ts, ts)
        for price in prices:
            if price is not None:
                self.low = price if self.low is None else min(self.low, price)
                self.high = price if self.high is None else max(self.high, price)


def text_vector(entities: EntityCache, text: str) -> Vector:
    """The embedding of a text's words alone (what facets group by and coverage compares)."""
    return entities.get("w:" + text, text, None, None)


def facets(ctx: UserContext, shape: ContextShape, entities: EntityCache) -> list[Facet]:
    """The context's interest clusters and recent behaviours, grouped by embedding (an
    entry joins the most similar group whose text is within ``join_similarity`` of its own,
    entries of the same text always together), heaviest first. Undescribed behaviours (no
    text) are not facets. Kept on the context until it changes: the trigger and the live
    write of a batch both read them."""
    cached = ctx.derived.get("facets")
    if cached is not None and cached[0] == ctx.version:
        return list(cached[1])
    at = ctx.newest_event_ts
    entries: list[tuple[str, str | None, str | None, float, dict[str, int], float, tuple[float | None, ...]]]
    entries = [
        (c.text, c.category, c.brand, c.weight, c.counts, c.updated_ts, (c.price_low, c.price_high))
        for c in ctx.interests
    ]
    entries += [  # newest first: a group is named after its newest behaviour
        (b["text"], b.get("category"), b.get("brand"), ACTION_WEIGHT[b["action"]], {b["action"]: 1}, b["ts"],
         (b.get("price"),))
        for b in reversed(ctx.recent)
        if b["text"]
    ]  # fmt: skip
    if not entries:
        ctx.derived["facets"] = (ctx.version, [])
        return []
    texts = list(dict.fromkeys(e[0] for e in entries))
    group_of: dict[str, int] = {texts[0]: 0}  # text -> index of its group's first text
    if len(texts) > 1:
        sims = (lambda m: (m @ m.T).tolist())(np.stack([text_vector(entities, t) for t in texts]))
        heads = [0]
        for i in range(1, len(texts)):
            row = sims[i]
            joined = max(heads, key=row.__getitem__)
            if row[joined] < shape.join_similarity:
                joined = i
                heads.append(i)
            group_of[texts[i]] = joined
    groups: dict[int, _Gathered] = {}
    for text, category, brand, weight, counts, ts, prices in entries:
        first = group_of[text]
        g = groups.get(first)
        if g is None:
            g = groups[first] = _Gathered(texts[first], category, brand)
        g.add(weight * math.exp2(-max(at - ts, 0.0) / shape.half_life_s), counts, ts, prices)
    found = sorted(
        (
            Facet(g.text, g.category, g.brand, g.weight, g.counts, g.last_ts, g.low, g.high)
            for g in groups.values()
        ),
        key=lambda f: -f.weight,
    )
    ctx.derived["facets"] = (ctx.version, found)
    return list(found)


def lasting(ctx: UserContext, shape: ContextShape, found: Sequence[Facet]) -> list[Facet]:
    """The lasting profile's kinds of item (``UserContext.kinds``) as facets, heaviest first.
    A kind weighs its share of the profile times ``shape.lasting_share`` times what the
    facets ``found`` weigh now: what the user returns to over months stands beside what
    they do this hour, below an interest that holds this hour. Counts are exact since the
    kind was first kept (``Facet.first_ts``)."""
    at = ctx.newest_event_ts
    weights = {k: lasting_weight(v, at, shape.lasting_half_life_s) for k, v in ctx.kinds.items()}
    total = sum(weights.values())
    if total <= 0:
        return []
    scale = shape.lasting_share * (sum(f.weight for f in found) or 1.0) / total
    out = [
        Facet(k, None, None, weights[k] * scale, dict(v.counts), v.updated_ts, None, None, v.first_ts)
        for k, v in ctx.kinds.items()
    ]
    return sorted(out, key=lambda f: -f.weight)


def covering(
    texts: Sequence[str], found: Sequence[Facet], entities: EntityCache, similarity: float
) -> list[bool]:
    """Per facet, whether one of ``texts`` covers it."""
    if not texts or not found:
        return [False] * len(found)
    anchors = np.stack([text_vector(entities, t) for t in texts])
    vectors = np.stack([text_vector(entities, f.text) for f in found])
    return [bool(x) for x in (vectors @ anchors.T).max(axis=1) >= similarity]


def unasked(ctx: UserContext, shape: ContextShape, entities: EntityCache, min_weight: float) -> list[Facet]:
    """The facets with at least ``min_weight`` that no re-plan request asked about
    (``UserContext.planned``), heaviest first."""
    heavy = [f for f in facets(ctx, shape, entities) if f.weight >= min_weight]
    asked = covering(ctx.planned, heavy, entities, shape.join_similarity)
    return [f for f, known in zip(heavy, asked, strict=True) if not known]


def novel(ctx: UserContext, shape: ContextShape, entities: EntityCache, min_weight: float) -> Facet | None:
    """The heaviest facet with real weight that is new (``unasked``); None when none is."""
    return next(iter(unasked(ctx, shape, entities, min_weight)), None)


# The same facet is written again at every change of its user: its tag and sentence are
# remembered (bounded: cleared when full).
_MEMO_MAX = 200_000
K = TypeVar("K", bound=Hashable)
_tags: dict[tuple[str | None, str | None, str], str] = {}
_Said = tuple[tuple[tuple[str, int], ...], float, float | None, float | None, float | None]
_sentences: dict[_Said, str] = {}


def live_tag(facet: Facet) -> str:
    """A short tag from the facet's own facts: brand and product type (the category path's
    leaf), else its text; lower case, cut at a word. Empty when nothing printable is left."""
    return _remembered(_tags, (facet.category, facet.brand, facet.text), facet, _live_tag)


def _remembered(memo: dict[K, str], key: K, facet: Facet, make: Callable[[Facet], str]) -> str:
    """``make(facet)``, remembered under ``key`` (the memo is cleared when full)."""
    made = memo.get(key)
    if made is None:
        if len(memo) >= _MEMO_MAX:
            memo.clear()
        made = memo[key] = make(facet)
    return made


def _live_tag(facet: Facet) -> str:
    named = (facet.brand, kind_of(facet.category)) if facet.category else (facet.text,)
    text = " ".join(w for w in named if w)
    text = plain_text(text.lower(), TAG_MAX_CHARS * 4)
    if len(text) > TAG_MAX_CHARS:  # cut at the last whole word that fits, if there is one
        head = text[: TAG_MAX_CHARS + 1]
        text = head.rsplit(" ", 1)[0] if " " in head else head[:TAG_MAX_CHARS]
    return text.strip()


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def live_explanation(facet: Facet) -> str:
    """One sentence of facts only: what was done how often, the day of the newest, the price
    band. ``Viewed 4 times and put in the cart once, last on 2019-10-01, priced 120-310.``"""
    first = facet.first_ts // 86_400 if facet.first_ts is not None else None
    counts = tuple(sorted(facet.counts.items()))
    key = (counts, facet.last_ts // 86_400, first, facet.price_low, facet.price_high)
    return _remembered(_sentences, key, facet, _live_explanation)


def _live_explanation(facet: Facet) -> str:
    ranked = sorted(facet.counts.items(), key=lambda an: (-ACTION_WEIGHT.get(an[0], 1.0), an[0]))
    done = [f"{ACTION_DONE.get(a, ACTION_DONE[Action.VIEW])} {_times(n)}" for a, n in ranked]
    said = done[0] if len(done) == 1 else ", ".join(done[:-1]) + " and " + done[-1]
    said = said[0].upper() + said[1:]
    if facet.first_ts is not None:
        said += f" since {datetime.fromtimestamp(facet.first_ts, UTC):%Y-%m-%d}"
    said += f", last on {datetime.fromtimestamp(facet.last_ts, UTC):%Y-%m-%d}"
    price = facet_price(facet)
    if price is not None:
        said += f", priced {price}"
    return sentence_text(said + ".", EXPLANATION_MAX_CHARS)


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def compose(
    ctx: UserContext,
    plan: LLMPlan | None,
    *,
    version: int,
    now: datetime,
    shape: ContextShape,
    entities: EntityCache,
    live_tags: int,
    cached: Mapping[str, CachedTag] | None = None,
    vet: Vet | None = None,
) -> IntentRecord | None:
    """The user's record now: ``plan``'s tags and up to ``live_tags`` entries for the
    heaviest facets and lasting kinds the plan does not cover, ranked together by the weight
    each covers now.
    An entry is the shared plan cache's tag for the facet when ``cached`` holds one (its
    explanation filled with this user's facts and checked by ``vet``,
    ``stream.plancache.fill``; the cache is used only with a ``vet``), else a live entry.
    None when there is nothing to say (no plan and no described behaviour)."""
    found = facets(ctx, shape, entities)
    llm: list[tuple[float, int, IntentTag]] = []
    covered = [False] * len(found)
    anchors: list[str] = []
    if plan is not None:
        for rank, t in enumerate(plan.tags):
            anchors += t.cites or [t.tag]
            mine = covering(t.cites or [t.tag], found, entities, shape.join_similarity)
            covered = [a or b for a, b in zip(covered, mine, strict=True)]
            weight = sum(f.weight for f, m in zip(found, mine, strict=True) if m)
            seen = max((f.last_ts for f, m in zip(found, mine, strict=True) if m), default=None)
            tag = IntentTag(
                tag=t.tag,
                explanation=t.explanation,
                source="llm",
                last_seen=_when(seen) if seen is not None else plan.event_time,
                wording=t.wording,
            )
            llm.append((weight, rank, tag))
    live: list[tuple[float, IntentTag]] = []
    model = plan.model if plan else NO_MODEL
    taken = {t.tag for _, _, t in llm}
    of_kind = lasting(ctx, shape, found)
    kind_known = covering(anchors + [t.tag for _, _, t in llm], of_kind, entities, shape.join_similarity)
    candidates = sorted(
        [(f, False) for f, k in zip(found, covered, strict=True) if not k]
        + [(f, True) for f, k in zip(of_kind, kind_known, strict=True) if not k],
        key=lambda fk: -fk[0].weight,
    )
    # A kind already shown (a facet of it has an entry, or an LLM tag covers one) is not
    # repeated as a lasting entry: "kettle" adds nothing under "bosch kettle".
    shown = {kind_of(f.category) for f, k in zip(found, covered, strict=True) if k and f.category}
    lasting_tags: set[str] = set()
    for facet, a_kind in candidates:
        if len(live) >= live_tags:
            break
        if a_kind and facet.text in shown:
            continue
        hit = cached.get(interest_key(facet.text)) if cached and vet is not None and not a_kind else None
        if hit is not None and vet is not None and not vet.tag(hit.tag):
            hit = None  # a tag our plans would never hold: the live entry instead
        # Built without re-validating: the tags and sentences are cleaned with the record's
        # own cleaners (schemas.text) and limits, here or when the cache entry was read.
        if hit is not None and hit.tag not in taken:
            assert vet is not None
            filled = fill(hit, facet, vet, now)
            entry = IntentTag.model_construct(
                tag=hit.tag,
                explanation=filled or live_explanation(facet),
                source="cache",
                last_seen=_when(facet.last_ts),
                wording="llm" if filled else "code",
            )
            model = hit.model if model == NO_MODEL else model
        else:
            text = live_tag(facet)
            if not text or text in taken:
                continue
            entry = IntentTag.model_construct(
                tag=text,
                explanation=live_explanation(facet),
                source="live",
                last_seen=_when(facet.last_ts),
                wording="code",
            )
        taken.add(entry.tag)
        if facet.category:
            kind = kind_of(facet.category)
            shown.add(kind)
            # A lasting entry taken before, heavier, for the kind this facet shows gives way.
            live = [(w, t) for w, t in live if t.tag != kind or t.tag not in lasting_tags]
        if a_kind:
            lasting_tags.add(entry.tag)
        live.append((facet.weight, entry))
    ranked = sorted(
        [(w, 0, rank, t) for w, rank, t in llm if w > 0] + [(w, 1, n, t) for n, (w, t) in enumerate(live)],
        key=lambda x: (-x[0], x[1], x[2]),
    )
    not_now = [t for w, _, t in llm if w <= 0]
    tags = ([t for *_, t in ranked] + not_now)[: len(llm) + live_tags]
    if not tags:
        return None
    return IntentRecord(
        user_id=ctx.user_id,
        version=version,
        context_version=max(ctx.version, 1),
        trigger=Trigger.LIVE,
        tags=tags,
        event_time=_when(ctx.newest_event_ts),
        planned_at=plan.planned_at if plan else now,
        model=model,
        verdict=plan.verdict if plan else "unjudged",
        llm_context_version=plan.context_version if plan else None,
    )


def merge_plan(
    current: IntentRecord | None,
    plan: LLMPlan,
    *,
    version: int,
    entities: EntityCache,
    similarity: float,
    live_tags: int,
) -> IntentRecord:
    """The record once ``plan`` lands: its tags (in the plan's order), then the live entries
    of ``current`` that the plan does not cover. The next live write re-ranks them."""
    llm = [
        IntentTag(
            tag=t.tag, explanation=t.explanation, source="llm", last_seen=plan.event_time, wording=t.wording
        )
        for t in plan.tags
    ]
    kept: list[IntentTag] = []
    if current is not None:
        live = [t for t in current.tags if t.source != "llm"]
        anchors = [c for t in plan.tags for c in (t.cites or [t.tag])]
        as_facets = [Facet(t.tag, None, None, 0.0, {}, 0.0, None, None) for t in live]
        known = covering(anchors, as_facets, entities, similarity)
        kept = [t for t, k in zip(live, known, strict=True) if not k and t.tag not in {x.tag for x in llm}]
    newer = current is not None and current.context_version > plan.context_version
    return IntentRecord(
        user_id=plan.user_id,
        version=version,
        context_version=current.context_version if newer and current else plan.context_version,
        trigger=plan.trigger,
        tags=llm + kept[:live_tags],
        event_time=current.event_time if newer and current else plan.event_time,
        planned_at=plan.planned_at,
        model=plan.model,
        verdict=plan.verdict,
        llm_context_version=plan.context_version,
    )
