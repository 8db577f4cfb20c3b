"""``intentstream eval``: do intents refreshed in real time predict a shopper's next
behaviours better than intents refreshed late, or than simple baselines?

The protocol, fixed before any result was looked at (docs/evaluation.md says why):

1. **Cases.** Each user's events in time order. The user is evaluated once, at a cut just
   before their last ``NEXT_EVENTS`` described events: those are the targets, everything
   before them is history. A user needs ``MIN_HISTORY`` described events of history. When
   more users qualify than asked for, a fixed-seed sample is taken.
2. **Tags at the cut**, one set per way of refreshing:
   * ``realtime``: the stream's own trigger policy runs over the history in event time;
     the tags are planned from the context at the last re-plan it asked for;
   * ``every_event``: planned from the context at the cut (a re-plan after every event:
     what the trigger's economy costs);
   * delayed by 5 min, 30 min, 1 h and a day: planned from the context as it stood that
     long before the cut (the batch job's view). Nothing before the log begins: no tags.
   One plan per distinct context version, reused by every mode that shares it.
   And the two speeds, composed by the worker's own ``stream.live.compose`` from the
   context at the cut: ``record``, the record a feed reads at real time (the real-time
   plan's tags and the live entries made by code, ranked together by weight now), and
   ``live``, the live entries alone (no LLM). So the LLM's share is visible: its tags alone are ``realtime``'s
   ``tag_ranks``; an echo of behaviour is ``live``. With the shared plan cache
   (``stream.plancache``): ``record_with_cache`` is the record composed with a cache holding
   what the evaluated plans of *other* users made for each interest, and
   ``llm_with_cache`` its ``llm`` and ``cache`` entries alone (the LLM's work, this user's
   and reused).
   With environment signals (``eval --signals holidays``), real time is walked a second time
   with the signals of the user's region: a signal re-plans the user when it comes into force
   (as the worker's fan-out does) and every request carries the signals in force then.
   ``realtime_with_signals`` and ``record_with_signals`` are that walk's tags and record;
   the report compares them with ``realtime`` and ``record`` for the users a signal reached.
3. **Predictions**: up to K texts. The user's tags first, then the most popular categories
   up to K, as a feed fills the slots around personal ones (no tags: popular only).
   Baselines: ``popular`` (categories by events before the cut, all users) and
   ``last_category`` (the user's last described category, then popular).
4. **Hits**: a prediction hits a target when it names the target's category (case-folded)
   or its embedding's cosine with the target item's text is at least ``THRESHOLD``.
   HR@K: the share of users with a hit in the top K. NDCG@K: ``1/log2(1 + r)`` for ``r``
   the rank of the first prediction that hits (binary relevance: one hit at rank 1 is
   ideal), 0 without a hit.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

import numpy as np

from intentstream.agents.cached import ExplainerVet, entries
from intentstream.agents.embedding import TextEmbedder
from intentstream.agents.evidence import Evidence, stem, user_view, words
from intentstream.agents.explainer import Explained
from intentstream.agents.judge import check_timeliness
from intentstream.schemas.codec import encode
from intentstream.schemas.events import BehaviorEvent, EnvSignal
from intentstream.schemas.record import LLMPlan, PlannedTag, ReplanRequest, feed_items, interleave
from intentstream.stream.batch import BatchPath, Message
from intentstream.stream.catalog import Catalog, co_view_pairs, latest_category, recent_items, sightings
from intentstream.stream.context import (
    ContextShape,
    UserContext,
    behaviour_of,
    concerns,
    replan_request,
    signals_for,
)
from intentstream.stream.live import compose
from intentstream.stream.plancache import CachedTag
from intentstream.stream.trigger import mark_replanned

NEXT_EVENTS = 5
MIN_HISTORY = 5
THRESHOLD = 0.5  # MiniLM cosine; see docs/evaluation.md for why this value
SEED = 20_261_122
REALTIME = "realtime"
EVERY_EVENT = "every_event"  # a plan of the context at the cut: real time with no trigger delay
DELAYS: tuple[tuple[str, timedelta], ...] = (
    ("5min", timedelta(minutes=5)),
    ("30min", timedelta(minutes=30)),
    ("1h", timedelta(hours=1)),
    ("daily", timedelta(days=1)),
)
MODES = (EVERY_EVENT, REALTIME, *(name for name, _ in DELAYS))
RECORD, LIVE = "record", "live"  # the two speeds at the cut: see the protocol above
RECORD_CACHED, LLM_CACHED = "record_with_cache", "llm_with_cache"
REALTIME_SIGNALS, RECORD_SIGNALS = "realtime_with_signals", "record_with_signals"
TWO_SPEEDS = (RECORD, LIVE, RECORD_CACHED, LLM_CACHED)
POPULAR, LAST_CATEGORY = "popular", "last_category"


def category_of(event: BehaviorEvent) -> str | None:
    """What a category means in this log: the leaf of the category path
    (``appliances.kitchen.kettle`` → ``kettle``), or the item's text when there is none."""
    if event.category:
        return event.category.rsplit(".", 1)[-1].replace("_", " ").casefold()
    return event.item_text.casefold() if event.item_text else None


@dataclass(frozen=True, slots=True)
class Case:
    """One evaluated user: what they did before the cut, and what they did next."""

    user_id: str
    history: tuple[BehaviorEvent, ...]
    targets: tuple[BehaviorEvent, ...]

    @property
    def cut(self) -> datetime:
        return self.targets[0].ts


def build_cases(
    events: Sequence[BehaviorEvent], *, users: int | None, seed: int = SEED
) -> tuple[list[Case], int]:
    """The evaluated users (sampled with ``seed`` down to ``users``), and how many qualified."""
    by_user: dict[str, list[BehaviorEvent]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e)
    cases: list[Case] = []
    for user_id in sorted(by_user):
        timeline = sorted(by_user[user_id], key=lambda e: e.ts)  # stable: log order on ties
        described = [i for i, e in enumerate(timeline) if e.item_text]
        if len(described) < MIN_HISTORY + NEXT_EVENTS:
            continue
        first_target = described[-NEXT_EVENTS]
        targets = tuple(timeline[i] for i in described[-NEXT_EVENTS:])
        cases.append(Case(user_id, tuple(timeline[:first_target]), targets))
    qualified = len(cases)
    if users is not None and users < qualified:
        cases = sorted(random.Random(seed).sample(cases, users), key=lambda c: c.user_id)
    return cases, qualified


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The context one mode plans from: ``request`` is None when there was nothing yet."""

    mode: str
    request: ReplanRequest | None
    context: UserContext | None = None  # the context at the cut, for the two speeds

    @property
    def key(self) -> PlanKey | None:
        return None if self.request is None else plan_key(self.request)


PlanKey = tuple[str, int, tuple[str, ...]]  # user, context version, the signals' texts


def plan_key(request: ReplanRequest) -> PlanKey:
    """One plan per context version and signals in force."""
    return request.user_id, request.context_version, tuple(s.text for s in request.signals)


def snapshots(
    case: Case, path: BatchPath, sweep_s: float = 30.0, signals: Sequence[EnvSignal] = ()
) -> list[Snapshot]:
    """The context each mode plans from, in MODES order, in one walk over the history.

    Real time runs the worker's own batch path (``BatchPath.apply``, one batch per event, in
    event time): a decided re-plan is built from the context when it is let out, so it also
    sees events that arrived with the one that triggered it (the same timestamp: one
    batch); and every ``sweep_s`` the worker's sweep asks the policy again with no event (a
    burst's tail, left by the cooldown, is re-planned then).

    With ``signals``, each one of the user's region re-plans them when it comes into force
    (the worker's fan-out, at the moment the stream clock passes its start; through the
    policy, once per signal), and every request carries the signals in force at its time.
    """
    ctx = UserContext(case.user_id)
    contexts = {0: {case.user_id: ctx}}
    shape = path.shape
    cut = case.cut
    due = sorted(((cut - delay, name) for name, delay in DELAYS), reverse=True)  # oldest first
    taken: dict[str, ReplanRequest | None] = {}
    realtime: ReplanRequest | None = None
    pending: tuple[float, str] | None = None  # a decided re-plan not yet let out: (at, reason)
    last_s: float | None = None
    starts = sorted(signals, key=lambda s: s.valid_from)

    def request(trigger: str, at: datetime) -> ReplanRequest | None:
        return _request(ctx, trigger, at, shape, signals)

    def fan_out(until_s: float) -> None:
        """The signals that came into force between the previous event and ``until_s``, in
        time order with the sweeps before them."""
        nonlocal realtime
        while starts and starts[0].valid_from.timestamp() <= until_s:
            signal = starts.pop(0)
            if last_s is None or not concerns(signal, ctx):
                continue  # before the user's first event (their first plan carries it), or not theirs
            moment = max(signal.valid_from.timestamp(), last_s)
            sweep(moment)
            at = datetime.fromtimestamp(moment, UTC)
            if signal.active_at(at) and (decision := path.policy.decide(ctx, moment, signal=signal)):
                mark_replanned(ctx, moment, shape, signal)
                realtime = request(decision.reason, at)

    def sweep(until_s: float) -> None:
        """The worker's sweeps between the previous event and ``until_s``."""
        nonlocal realtime
        if last_s is None:
            return
        first, last = (math.floor(last_s / sweep_s) + 1) * sweep_s, math.ceil(until_s / sweep_s - 1) * sweep_s
        for tick in dict.fromkeys((first, last)):
            if last_s < tick < until_s and (decision := path.decide([ctx], tick).get(ctx.user_id)):
                mark_replanned(ctx, tick, shape)
                realtime = request(decision.reason, datetime.fromtimestamp(tick, UTC))

    for offset, event in enumerate(case.history):
        now_s = event.ts.timestamp()
        if pending is not None and now_s > pending[0]:
            let_out = datetime.fromtimestamp(pending[0], UTC)
            realtime, pending = request(pending[1], let_out), None
        fan_out(now_s)
        sweep(now_s)
        while due and event.ts > due[-1][0]:
            at, name = due.pop()
            taken[name] = request("batch", at)
        message = Message("behaviors", 0, offset, event.user_id.encode(), encode(event), now_s * 1000)
        outcome = path.apply(contexts, [message], event.ts)
        if outcome.dead:
            raise EvaluationFailed(f"the worker's batch path refused an event of the log: {outcome.dead[0]}")
        if decision := outcome.decisions.get(ctx.user_id):
            mark_replanned(ctx, now_s, shape)
            pending = (now_s, decision.reason)
        last_s = now_s
    if pending is not None:  # let out with the history only: the targets are not the plan's to see
        realtime = request(pending[1], datetime.fromtimestamp(pending[0], UTC))
    fan_out(cut.timestamp())
    sweep(cut.timestamp())
    for at, name in due:
        taken[name] = request("batch", at)
    return [
        Snapshot(EVERY_EVENT, request("every_event", cut)),
        Snapshot(REALTIME, realtime),
        *(Snapshot(name, taken[name]) for name, _ in DELAYS),
        Snapshot(RECORD, realtime, ctx),
        Snapshot(LIVE, None, ctx),
    ]


def _request(
    ctx: UserContext, trigger: str, now: datetime, shape: ContextShape, signals: Sequence[EnvSignal] = ()
) -> ReplanRequest | None:
    if not ctx.version:
        return None
    return replan_request(
        ctx, trigger=trigger, signals=signals_for(ctx, list(signals), now), now=now, shape=shape
    )


def popular_at(events: Sequence[BehaviorEvent], cuts: Sequence[datetime], k: int) -> list[list[str]]:
    """For each cut, the ``k`` categories with most events strictly before it (all users)."""
    ordered = sorted((e for e in events if category_of(e)), key=lambda e: e.ts)
    counts: Counter[str] = Counter()
    out: dict[int, list[str]] = {}
    i = 0
    for j in sorted(range(len(cuts)), key=lambda j: cuts[j]):
        while i < len(ordered) and ordered[i].ts < cuts[j]:
            counts[category_of(ordered[i]) or ""] += 1
            i += 1
        out[j] = [c for c, _ in counts.most_common(k)]
    return [out[j] for j in range(len(cuts))]


def last_category(case: Case) -> list[str]:
    for e in reversed(case.history):
        if (c := category_of(e)) is not None:
            return [c]
    return []


def ranked(personal: Sequence[str], fill: Sequence[str], k: int) -> list[str]:
    """``personal`` first, then ``fill``, case-folded, without repeats, at most ``k``."""
    out: list[str] = []
    for text in (*personal, *fill):
        text = text.casefold().strip()
        if text and text not in out:
            out.append(text)
            if len(out) == k:
                break
    return out


class Matcher:
    """Does a prediction name a target? Category match, or embedding cosine ≥ threshold."""

    def __init__(self, embedder: TextEmbedder, threshold: float = THRESHOLD) -> None:
        self.embedder, self.threshold = embedder, threshold

    def first_hit(self, predictions: Sequence[str], targets: Sequence[BehaviorEvent]) -> int | None:
        """The 1-based rank of the first prediction that hits any target, or None."""
        if not predictions:
            return None
        texts = [t.item_text or "" for t in targets]
        sims = self.embedder.embed(list(predictions)) @ self.embedder.embed(texts).T
        categories = {category_of(t) for t in targets}
        for rank, (text, row) in enumerate(zip(predictions, sims, strict=True), start=1):
            if text in categories or float(np.max(row)) >= self.threshold:
                return rank
        return None


def hit_rate(ranks: Sequence[int | None], k: int) -> float:
    return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0


def ndcg(ranks: Sequence[int | None], k: int) -> float:
    gains = [1 / math.log2(1 + r) if r is not None and r <= k else 0.0 for r in ranks]
    return sum(gains) / len(gains) if gains else 0.0


class Tagged(NamedTuple):
    """A tag, the evidence it cites, and its explanation where the tagger wrote one."""

    tag: str
    cites: list[Evidence]
    explanation: str | None = None


class Tagger(Protocol):
    """Whatever turns a context snapshot into tags, strongest first, each with the texts
    of the evidence it was made from."""

    async def tags(self, request: ReplanRequest, now: datetime) -> list[Tagged]: ...


def as_plan(request: ReplanRequest, tagged: Sequence[Tagged]) -> LLMPlan | None:
    """Tags as the plan the worker keeps (explanations do not change the ranking)."""
    if not tagged:
        return None
    return LLMPlan(
        user_id=request.user_id,
        context_version=request.context_version,
        trigger=request.trigger,
        event_time=request.newest_event_time,
        planned_at=request.requested_at,
        model="eval",
        tags=[
            PlannedTag(tag=t, explanation="Planned.", cites=[e.text for e in c if e.kind != "signal"][:20])
            for t, c, _ in tagged
        ],
    )


def shared_cache(plans: dict[PlanKey, list[Tagged] | None]) -> dict[str, list[tuple[str, CachedTag]]]:
    """What the plan cache would hold after ``plans``, per interest key: the entries of the
    first two users to plan it (so every user can be served another user's, never their
    own), through the worker's own ``stream.plancache.entries``."""
    held: dict[str, list[tuple[str, CachedTag]]] = defaultdict(list)
    for (user, _, signals), tagged in sorted(plans.items()):
        if signals:
            continue  # a plan made for a signal is not shared (``IntentChain.plan``)
        made = entries(
            [(t, None, cited) for t, cited, _ in tagged or []], model="eval", now=datetime.now(UTC)
        )
        for entry in made:
            mine = held[entry.key]
            if len(mine) < 2 and all(u != user for u, _ in mine):
                mine.append((user, entry))
    return held


@dataclass
class Scores:
    """Every method's first-hit rank per case, and the tags each mode served."""

    k: int
    ranks: dict[str, list[int | None]] = field(default_factory=dict)
    tag_ranks: dict[str, list[int | None]] = field(default_factory=dict)  # tags alone, no fill
    users_with_tags: dict[str, int] = field(default_factory=dict)
    served: dict[str, list[list[str]]] = field(default_factory=dict)  # per mode, per case: the tags
    plans: int = 0
    plans_failed: int = 0
    # Per case: what real time served and what came next (to show why it hit or missed).
    details: list[dict[str, Any]] = field(default_factory=list)
    # With signals: the cases whose real-time plan carried a signal (indices into the ranks),
    # and what the signal did to each (``signal_effect``).
    reached: list[int] = field(default_factory=list)
    signal_effects: list[dict[str, Any]] = field(default_factory=list)

    def check(self, hint: str) -> None:
        """Raise :class:`EvaluationFailed` when every plan failed: a report of popular lists
        alone would read as a result."""
        if self.plans and self.plans_failed == self.plans:
            raise EvaluationFailed(f"all {self.plans} plans failed; {hint}")


async def evaluate(
    cases: Sequence[Case],
    events: Sequence[BehaviorEvent],
    tagger: Tagger,
    matcher: Matcher,
    *,
    k: int,
    path: BatchPath,
    concurrency: int = 4,
    sweep_s: float = 30.0,
    live_tags: int = 3,
    progress: Callable[[int, int], None] | None = None,
    signals: Sequence[EnvSignal] = (),
) -> Scores:
    """Score every mode and baseline on ``cases`` (the functional steps, plus the tagger);
    with ``signals``, real time and the record again with them (``REALTIME_SIGNALS``,
    ``RECORD_SIGNALS``)."""
    snaps = [snapshots(c, path, sweep_s) for c in cases]
    if signals:
        renamed = {REALTIME: REALTIME_SIGNALS, RECORD: RECORD_SIGNALS}
        for c, per_case in zip(cases, snaps, strict=True):
            walked = snapshots(c, path, sweep_s, signals)
            per_case += [replace(s, mode=renamed[s.mode]) for s in walked if s.mode in renamed]
    unique: dict[PlanKey, ReplanRequest] = {}
    for per_case in snaps:
        for s in per_case:
            if s.key is not None and s.request is not None:
                unique.setdefault(s.key, s.request)
    plans: dict[PlanKey, list[Tagged] | None] = {}
    gate = asyncio.Semaphore(concurrency)

    async def plan(key: PlanKey, request: ReplanRequest) -> None:
        async with gate:
            try:
                plans[key] = await tagger.tags(request, request.requested_at)
            except PlanUnavailable:
                plans[key] = None
        if progress is not None:
            progress(len(plans), len(unique))

    await asyncio.gather(*(plan(key, request) for key, request in unique.items()))

    popular = popular_at(events, [c.cut for c in cases], k)
    held = shared_cache(plans)
    scores = Scores(k, plans=len(plans), plans_failed=sum(v is None for v in plans.values()))

    def score(mode: str, tags: list[str], case: Case, fill: list[str]) -> None:
        scores.users_with_tags[mode] = scores.users_with_tags.get(mode, 0) + bool(tags)
        scores.served.setdefault(mode, []).append(list(tags))
        scores.ranks.setdefault(mode, []).append(matcher.first_hit(ranked(tags, fill, k), case.targets))
        scores.tag_ranks.setdefault(mode, []).append(matcher.first_hit(ranked(tags, [], k), case.targets))

    for case, per_case, fill in zip(cases, snaps, popular, strict=True):
        others = {
            key: next(e for u, e in mine if u != case.user_id)
            for key, mine in held.items()
            if any(u != case.user_id for u, _ in mine)
        }
        for s in per_case:
            tagged = (plans.get(s.key) or []) if s.key is not None else []
            if s.context is None:
                score(s.mode, [t.tag for t in tagged], case, fill)
                continue
            # A speed of the record: composed as the worker composes it.
            made = as_plan(s.request, tagged) if s.request is not None else None
            composed = compose(
                s.context, made, version=1, now=case.cut, shape=path.shape, entities=path.entities,
                live_tags=live_tags,
            )  # fmt: skip
            score(s.mode, [t.tag for t in composed.tags] if composed else [], case, fill)
            if s.mode == RECORD:
                cached = compose(
                    s.context, made, version=1, now=case.cut, shape=path.shape, entities=path.entities,
                    live_tags=live_tags, cached=others, vet=ExplainerVet(),
                )  # fmt: skip
                got = cached.tags if cached else []
                score(RECORD_CACHED, [t.tag for t in got], case, fill)
                score(LLM_CACHED, [t.tag for t in got if t.source != "live"], case, fill)
        scores.ranks.setdefault(POPULAR, []).append(matcher.first_hit(ranked([], fill, k), case.targets))
        scores.ranks.setdefault(LAST_CATEGORY, []).append(
            matcher.first_hit(ranked(last_category(case), fill, k), case.targets)
        )
        rt = next(s for s in per_case if s.mode == REALTIME)
        realtime = rt.request
        with_signals = next((s for s in per_case if s.mode == REALTIME_SIGNALS), None)
        signalled = with_signals.request if with_signals is not None else None
        if with_signals is not None and signalled is not None and signalled.signals:
            scores.reached.append(len(scores.ranks[POPULAR]) - 1)
            without = [t.tag for t in plans.get(rt.key) or []] if rt.key else []
            scores.signal_effects.append(
                signal_effect(signalled, plans.get(plan_key(signalled)) or [], without)
            )
        scores.details.append(
            {
                "user": case.user_id,
                "realtime_tags": [t.tag for t in plans.get(rt.key) or []] if rt.key else [],
                # Events the real-time plan had not seen: the trigger waits for a reason.
                "events_after_realtime_plan": len(case.history)
                - (realtime.context_version if realtime else 0),
                "last_category": next(iter(last_category(case)), None),
                "next_categories": [category_of(t) for t in case.targets],
                "realtime_tags_hit": scores.tag_ranks[REALTIME][-1] is not None,
                "last_category_hit": scores.ranks[LAST_CATEGORY][-1] == 1,
            }
        )
    return scores


def signal_effect(request: ReplanRequest, tagged: Sequence[Tagged], without: Sequence[str]) -> dict[str, Any]:
    """What the signals in ``request`` did to its plan: the tags with them and without; whether
    a tag cites a signal, whether a tag or explanation names a word that only the signal
    brought (not in the user's behaviour); and the judge's own timeliness check."""
    view = user_view(request, request.requested_at)
    behaviour = view.vocabulary([e.id for e in view.evidence if e.kind != "signal"])
    region = {stem(w) for w in words(view.region or "")}  # the profile states it anyway
    brought = {stem(w) for e in view.signals for w in words(e.text)} - behaviour - region
    named = [t for t in tagged if brought & {stem(w) for w in words(f"{t.tag} {t.explanation or ''}")}]
    explained = [Explained(t.tag, t.explanation or "", tuple(e.id for e in t.cites)) for t in tagged]
    return {
        "user": request.user_id,
        "signals": [s.text for s in request.signals],
        "tags_without_signals": list(without),
        "tags_with_signals": [t.tag for t in tagged],
        "explanations_with_signals": [t.explanation for t in tagged],
        "tags_changed": [t.tag for t in tagged] != list(without),
        "cites_signal": any(e.kind == "signal" for t in tagged for e in t.cites),
        "names_signal": bool(named),
        "timeliness_passed": check_timeliness(explained, view).passed if tagged else False,
    }


# -- the item level ----------------------------------------------------------------------

ITEM_CUTOFFS = (10, 30)
CO_VIEWED, LAST_CATEGORY_POPULAR = "co_viewed", "last_category_popular"
RECORD_TAGS_ONLY = "record_tags_only"  # the record's tags' items without the co-viewed ones
RECORD_WITHOUT_CATEGORY = "record_without_category_popular"  # tags' and co-viewed items only
RECENT = ContextShape().recent  # behaviours a context keeps in full
RECORD_DELAYED = "record_"  # + a delay: that delay's record (tags', co-viewed and category items), as of then


@dataclass
class ItemScores:
    """First-hit ranks on the items users touched next, per method, two ways: excluding the
    items a user had seen before the cut (from candidates and hits), and including them."""

    k: int
    new: dict[str, list[int | None]] = field(default_factory=dict)
    seen_too: dict[str, list[int | None]] = field(default_factory=dict)
    users_with_new_items: int = 0
    catalog_items: int = 0


def item_level(
    cases: Sequence[Case],
    events: Sequence[BehaviorEvent],
    served: dict[str, list[list[str]]],
    *,
    k: int,
    items_per_tag: int,
    half_life_s: float,
    recent: int = RECENT,
) -> ItemScores:
    """Score the tags each mode served (``Scores.served``) on the items the users touched
    next. The catalog is the worker's (``stream.catalog.Catalog``), fed with every event
    before each moment in time order, and its co-viewed counts with the pairs the worker
    makes (``co_view_pairs``, from each user's last ``recent`` behaviours; at a cut, the
    user's whole history is theirs, as the worker has applied it); a mode's
    predictions are its tags' items, looked up when its tags were planned (at the cut; for a
    delayed mode, that long before) (``Catalog.candidates``, ``items_per_tag`` each, as the
    worker writes them) in turn by rank (``interleave``), then the most popular items up to
    ``k``, as a feed fills its slots. The record (``record``, and ``record_<delay>`` for a
    record that old) is read as a feed reads it: its tags' items in turn with the items
    co-viewed with the user's last ones and the most popular of their last category
    (``feed_items``, the category by ``latest_category`` of the behaviours the worker held);
    ``record_tags_only`` leaves both out, ``record_without_category_popular`` the category's
    items. Baselines from the same catalog at the same moment: ``popular``;
    ``co_viewed`` alone; ``last_category_popular``."""
    catalog = Catalog(half_life_s=half_life_s)
    behaviours: dict[str, list[dict[str, Any]]] = defaultdict(list)  # as UserContext.recent holds them
    ordered = sorted(events, key=lambda e: e.ts)
    out = ItemScores(k)
    delays = {name: delay for name, delay in DELAYS if name in served}
    # A delayed mode's items are looked up when its plan was made (a batch job writes them
    # then); everything else at the cut. Moments in time order: (time, kind, case index).
    moments = sorted(
        [(c.cut - delay, name, j) for j, c in enumerate(cases) for name, delay in delays.items()]
        + [(c.cut, "", j) for j, c in enumerate(cases)]
    )
    early: dict[tuple[int, str], tuple[list[list[str]], list[str], list[str]]] = {}
    i = 0
    for moment, delayed, index in moments:
        while i < len(ordered) and ordered[i].ts < moment:
            e = ordered[i]
            if e.item_id and e.item_text:
                catalog.add(sightings([e]))
            mine = behaviours[e.user_id]
            catalog.co_view((a, b, 1) for a, b in co_view_pairs(mine, e))
            mine.append(behaviour_of(e))
            del mine[:-recent]
            i += 1
        case = cases[index]
        # The user's behaviours as the worker held them then: at the cut, their whole history.
        held = [behaviour_of(e) for e in case.history if e.ts < moment or not delayed][-recent:]
        last, kind = recent_items(held), latest_category(held)
        extra = len(case.history)  # room for what the exclusions below take out
        if delayed:
            tags = served[delayed][index]
            early[index, delayed] = (
                catalog.candidates(tags, moment.timestamp(), n=items_per_tag + extra),
                catalog.co_viewed(last, k + extra),
                catalog.bestsellers(kind, moment.timestamp(), k + extra) if kind else [],
            )
            continue
        now_s = case.cut.timestamp()
        seen = {e.item_id for e in case.history if e.item_id}
        targets = {t.item_id for t in case.targets if t.item_id}
        category = next((e.category for e in reversed(case.history) if e.item_text and e.category), None)
        new = targets - seen
        out.users_with_new_items += bool(new)
        for exclude, ranks in ((seen, out.new), (set(), out.seen_too)):
            wanted = new if exclude else targets
            if not wanted:
                continue  # every next item was one they had seen: not a case for new items
            fill = catalog.popular(now_s, k, exclude=exclude)
            co_viewed = catalog.co_viewed(last, k, exclude=exclude)
            bestsellers = catalog.bestsellers(kind, now_s, k, exclude=exclude) if kind else []
            picks: dict[str, list[str]] = {}
            for mode, per_case in served.items():
                if mode in delays:
                    found, co_then, kind_then = early[index, mode]
                    per_tag = [[x for x in items if x not in exclude][:items_per_tag] for items in found]
                    picks[mode] = interleave(per_tag, k)
                    co_then, kind_then = ([x for x in xs if x not in exclude] for xs in (co_then, kind_then))
                    picks[RECORD_DELAYED + mode] = feed_items(per_tag, co_then, kind_then, k)
                else:
                    per_tag = catalog.candidates(per_case[index], now_s, n=items_per_tag, exclude=exclude)
                    picks[mode] = interleave(per_tag, k)
                    if mode == RECORD:
                        picks[RECORD_TAGS_ONLY] = picks[mode]
                        picks[RECORD_WITHOUT_CATEGORY] = feed_items(per_tag, co_viewed, [], k)
                        picks[mode] = feed_items(per_tag, co_viewed, bestsellers, k)
            picks[POPULAR] = []
            picks[CO_VIEWED] = co_viewed
            picks[LAST_CATEGORY_POPULAR] = (
                catalog.bestsellers(category, now_s, k, exclude=exclude) if category else []
            )
            for mode, items in picks.items():
                predictions = list(dict.fromkeys([*items, *fill]))[:k]  # personal first, then popular
                rank = next((r for r, item in enumerate(predictions, 1) if item in wanted), None)
                ranks.setdefault(mode, []).append(rank)
    out.catalog_items = len(catalog)
    return out


class PlanUnavailable(RuntimeError):
    """The tagger gave no tags for a snapshot (the agents failed): the user sees popular."""


class NothingToEvaluate(ValueError):
    """No user in the log has enough described events to be evaluated."""


class EvaluationFailed(RuntimeError):
    """The evaluation could not give a meaningful result (say, every plan failed)."""
