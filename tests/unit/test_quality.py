"""The evaluation's metrics and protocol on small hand-made logs whose answers are known.

The tagger here is a test double (``LatestCategoryTagger``): it tags a snapshot with the
category of its newest behaviour, so which snapshot each mode planned from shows in the
hits. Only category matches count (``EXACT``), unless a test says otherwise."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from intentstream.agents.embedding import HashedEmbedder, MiniLMEmbedder
from intentstream.agents.evidence import Evidence
from intentstream.perf.quality import (
    EVERY_EVENT,
    LAST_CATEGORY,
    LIVE,
    POPULAR,
    REALTIME,
    RECORD,
    THRESHOLD,
    EvaluationFailed,
    Matcher,
    PlanKey,
    PlanUnavailable,
    Snapshot,
    Tagged,
    build_cases,
    evaluate,
    hit_rate,
    ndcg,
    popular_at,
    ranked,
    shared_cache,
    snapshots,
)
from intentstream.schemas.events import Action, BehaviorEvent, EnvSignal, SignalKind
from intentstream.schemas.record import ReplanRequest
from intentstream.stream.batch import BatchPath
from intentstream.stream.context import ContextShape
from intentstream.stream.entities import EntityCache
from intentstream.stream.trigger import TriggerPolicy

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
EXACT = Matcher(HashedEmbedder(), threshold=2.0)  # cosine never reaches 2: category matches only


def batch_path(policy: TriggerPolicy | None = None) -> BatchPath:
    """The worker's batch path with the default shape, as the evaluation runs it. These
    histories are short, so the first plan comes at the novelty weight (the first-plan
    weight has its own tests: ``test_trigger``, ``test_worker_novelty``)."""
    return BatchPath(ContextShape(), policy or TriggerPolicy(first_min_weight=4.5), EntityCache())


def ev(user: str, minute: float, category: str, n: int, text: str | None = None) -> BehaviorEvent:
    return BehaviorEvent(
        event_id=f"{user}-{n}",
        user_id=user,
        action="view",
        ts=T0 + timedelta(minutes=minute),
        item_id=f"{category}-{n}",
        item_text=text or f"{category} model {n}",
        category=f"home.{category}",
    )


def switcher(user: str = "switcher") -> list[BehaviorEvent]:
    """Kettles for an hour, sofas from 10 minutes before the cut, then five sofas."""
    kettles = [ev(user, m, "kettle", i) for i, m in enumerate(range(0, 60, 6))]
    sofas = [ev(user, 100 + m, "sofa", 20 + i) for i, m in enumerate(range(5))]
    targets = [ev(user, 110 + m, "sofa", 40 + i) for i, m in enumerate(range(5))]
    return kettles + sofas + targets


def realtime_of(snaps: list[Snapshot]) -> ReplanRequest | None:
    return next(s.request for s in snaps if s.mode == REALTIME)


class LatestCategoryTagger:
    """Test double for the agents: the snapshot's newest behaviour's category leaf."""

    def __init__(self, fail_for: set[str] | None = None) -> None:
        self.planned: list[ReplanRequest] = []
        self.fail_for = fail_for or set()

    async def tags(self, request: ReplanRequest, now: datetime) -> list[Tagged]:
        self.planned.append(request)
        if request.user_id in self.fail_for:
            raise PlanUnavailable(request.user_id)
        newest = max(request.recent, key=lambda b: b.ts)
        return [
            Tagged(
                (newest.category or "").rsplit(".", 1)[-1],
                [Evidence("r1", "recent", newest.text, {"view": 1})],
            )
        ]


def test_hit_rate_and_ndcg_on_known_ranks() -> None:
    ranks = [1, 3, None, 31]
    assert hit_rate(ranks, 30) == 0.5
    assert hit_rate(ranks, 1) == 0.25
    assert ndcg(ranks, 30) == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert ndcg([], 30) == 0.0
    assert hit_rate([], 30) == 0.0


def test_ranked_puts_personal_first_without_repeats_and_stops_at_k() -> None:
    assert ranked(["Sofa", "lamp"], ["sofa", "kettle", "rug"], 3) == ["sofa", "lamp", "kettle"]
    assert ranked([], ["a", "", "b"], 5) == ["a", "b"]


def test_cases_hold_out_the_last_five_described_events() -> None:
    events = switcher() + [ev("short", m, "rug", m) for m in range(9)]  # 9 events: too few
    undescribed = BehaviorEvent(
        event_id="switcher-x", user_id="switcher", action="view", ts=T0 + timedelta(minutes=113), item_id="x"
    )
    cases, qualified = build_cases([*events, undescribed], users=None)
    assert qualified == 1
    (case,) = cases
    assert [e.event_id for e in case.targets] == [f"switcher-{n}" for n in range(40, 45)]
    assert len(case.history) == 15
    assert case.cut == T0 + timedelta(minutes=110)


def test_a_sample_is_fixed_by_its_seed() -> None:
    events = [e for u in range(20) for e in switcher(f"u{u}")]
    first, qualified = build_cases(events, users=5, seed=7)
    again, _ = build_cases(events, users=5, seed=7)
    other, _ = build_cases(events, users=5, seed=8)
    assert qualified == 20
    assert len(first) == 5
    assert [c.user_id for c in first] == [c.user_id for c in again] != [c.user_id for c in other]


SOFAS_MATTER = TriggerPolicy(min_weight=3.5, first_min_weight=3.5)  # four views of an interest ask the LLM


def test_delayed_snapshots_see_only_what_happened_that_long_before() -> None:
    (case,), _ = build_cases(switcher(), users=None)
    snaps = {s.mode: s.request for s in snapshots(case, batch_path(SOFAS_MATTER))}
    assert snaps["5min"] is not None
    assert snaps["5min"].context_version == 15
    assert snaps["30min"] is not None
    assert snaps["30min"].context_version == 10
    assert snaps["1h"] is not None
    assert snaps["1h"].context_version == 9
    assert snaps["daily"] is None  # the log starts less than a day before the cut
    every_event = snaps[EVERY_EVENT]
    assert every_event is not None
    assert every_event.context_version == 15  # the whole history
    realtime = snaps[REALTIME]  # asked when the sofas became an interest: the 4th sofa
    assert realtime is not None
    assert (realtime.context_version, realtime.trigger) == (14, "novelty")


def test_a_basket_re_planned_at_its_first_line_is_planned_with_all_of_its_lines() -> None:
    # Twelve purchases on one invoice share a timestamp and arrive in one batch: the second
    # line makes a first interest and the request, built when it is let out, sees them all.
    basket = [ev("shopper", 0, "mug", i).model_copy(update={"action": Action.PURCHASE}) for i in range(12)]
    targets = [ev("shopper", 24 * 60, "mug", 20 + i) for i in range(5)]
    (case,), _ = build_cases(basket + targets, users=None)
    no_sweep = 1e9  # the sweep would also re-plan them; this checks the batch alone
    realtime = realtime_of(snapshots(case, batch_path(), no_sweep))
    assert realtime is not None
    assert realtime.context_version == 12
    assert realtime.trigger == "first_plan"


def test_the_sweep_re_plans_what_the_cooldown_held_back() -> None:
    # Lamp views a second apart make a first interest at the 5th; three rugs put in the
    # cart within the 10 s cooldown are new; the sweep after them, before the next event,
    # asks about them.
    views = [ev("fast", i / 60, "lamp", i) for i in range(8)]
    rugs = [
        ev("fast", (8 + i) / 60, "rug", 10 + i).model_copy(update={"action": Action.CART}) for i in range(3)
    ]
    targets = [ev("fast", 10 + i, "lamp", 20 + i) for i in range(5)]
    (case,), _ = build_cases(views + rugs + targets, users=None)
    policy = TriggerPolicy(cooldown_s=10.0, first_min_weight=4.5)
    with_sweep = realtime_of(snapshots(case, batch_path(policy), sweep_s=30.0))
    no_sweep = realtime_of(snapshots(case, batch_path(policy), sweep_s=1e9))
    assert no_sweep is not None
    assert (no_sweep.context_version, no_sweep.trigger) == (5, "first_plan")
    assert with_sweep is not None
    assert (with_sweep.context_version, with_sweep.trigger) == (11, "novelty")


async def test_real_time_sees_the_switch_and_late_refreshes_do_not() -> None:
    # Popular before the cut: kettles (10 views) over sofas (5), so the fill is kettle, sofa.
    events = switcher()
    cases, _ = build_cases(events, users=None)
    tagger = LatestCategoryTagger()
    scores = await evaluate(cases, events, tagger, EXACT, k=1, path=batch_path(SOFAS_MATTER))
    assert scores.ranks[REALTIME] == [1]
    assert scores.ranks["5min"] == [1]
    assert scores.ranks["30min"] == [None]
    assert scores.ranks["1h"] == [None]
    assert scores.ranks["daily"] == [None]  # no tags: popular's kettle
    assert scores.ranks[POPULAR] == [None]
    assert scores.ranks[LAST_CATEGORY] == [1]
    assert scores.users_with_tags == {
        EVERY_EVENT: 1, REALTIME: 1, "5min": 1, "30min": 1, "1h": 1, "daily": 0, RECORD: 1, LIVE: 1,
        "record_with_cache": 1, "llm_with_cache": 1,
    }  # fmt: skip
    assert scores.ranks[EVERY_EVENT] == [1]
    assert scores.ranks[RECORD] == [1]  # the plan's sofa, re-ranked first
    assert scores.ranks[LIVE] == [1]  # code alone names the sofas too: an echo of behaviour
    assert scores.plans == 4  # versions 15, 14, 10 and 9, each planned once and reused
    (detail,) = scores.details
    assert detail["realtime_tags"] == ["sofa"]
    assert detail["events_after_realtime_plan"] == 1  # the fifth sofa: the live record's
    assert detail["next_categories"] == ["sofa"] * 5
    assert detail["last_category"] == "sofa"


async def test_popular_fill_catches_what_stale_tags_miss_at_a_larger_k() -> None:
    events = switcher()
    cases, _ = build_cases(events, users=None)
    scores = await evaluate(
        cases,
        events,
        LatestCategoryTagger(),
        EXACT,
        k=2,
        path=batch_path(),
    )
    assert scores.ranks["30min"] == [2]  # kettle (its tag), then sofa from the popular fill
    assert scores.tag_ranks["30min"] == [None]  # its tags alone miss


async def test_a_failed_plan_leaves_the_user_on_popular_and_is_counted() -> None:
    events = switcher()
    cases, _ = build_cases(events, users=None)
    scores = await evaluate(
        cases,
        events,
        LatestCategoryTagger(fail_for={"switcher"}),
        EXACT,
        k=1,
        path=batch_path(SOFAS_MATTER),
    )
    assert scores.plans_failed == 4
    with pytest.raises(EvaluationFailed, match="all 4 plans failed; is it up"):
        scores.check("is it up?")
    assert scores.users_with_tags[REALTIME] == 0
    assert scores.ranks[REALTIME] == scores.ranks[POPULAR] == [None]


def test_popular_counts_only_events_before_each_cut() -> None:
    events = [ev("a", 0, "kettle", 0), ev("b", 1, "sofa", 1), ev("c", 2, "sofa", 2)]
    early, late = popular_at(events, [T0 + timedelta(minutes=1), T0 + timedelta(minutes=5)], 5)
    assert early == ["kettle"]
    assert late == ["sofa", "kettle"]


def test_a_prediction_hits_by_text_similarity_above_the_threshold() -> None:
    target = ev("u", 0, "kettle", 0, text="red enamel kettle")
    loose = Matcher(HashedEmbedder(), threshold=0.5)
    assert loose.first_hit(["garden hose", "red enamel kettle"], [target]) == 2
    assert loose.first_hit(["garden hose"], [target]) is None
    assert EXACT.first_hit(["red enamel kettle"], [target]) is None  # not its category
    assert EXACT.first_hit([], [target]) is None


def test_the_fixed_threshold_counts_same_kind_and_not_broad_or_unrelated() -> None:
    """The pairs docs/evaluation.md quotes for the threshold (none from the logs)."""
    embedder = MiniLMEmbedder()

    def cosine(a: str, b: str) -> float:
        va, vb = embedder.embed([a, b])
        return float(va @ vb)

    assert cosine("smartphone", "samsung smartphone") >= THRESHOLD
    assert cosine("hot water bottle", "scottie dog hot water bottle") >= THRESHOLD
    assert cosine("kitchen appliances", "bosch kettle") < THRESHOLD
    assert cosine("headphones", "apple smartphone") < THRESHOLD
    assert cosine("garden tools", "ceramic mug") < 0.3


class FixedTaggerDouble:
    """Test double: a tagger that always answers the same tag."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    async def tags(self, request: ReplanRequest, now: datetime) -> list[Tagged]:
        return [Tagged(self.tag, [])]


async def test_the_record_s_hits_are_credited_to_whoever_made_them() -> None:
    from intentstream.perf.evaluation import report

    events = switcher()
    cases, _ = build_cases(events, users=None)
    scores = await evaluate(
        cases, events, FixedTaggerDouble("garden hose"), EXACT, k=3, path=batch_path(SOFAS_MATTER)
    )
    assert scores.tag_ranks[REALTIME] == [None]  # the LLM's tag alone misses
    assert scores.tag_ranks[LIVE] == [1]  # code's echo of the sofas hits
    assert scores.tag_ranks[RECORD] == [1]  # the live entry goes before the tag that covers nothing now
    parts = report(scores, dataset="switcher", qualified=1, users=None, seed=1)["two_speeds"]
    assert parts["alone"]["llm_tags"]["hr_at_3"] == 0.0
    assert parts["alone"]["live_entries"]["hr_at_3"] == 1.0
    assert parts["alone"]["record"]["hr_at_1"] == 1.0


def test_the_evaluations_plan_cache_holds_other_users_work_through_the_workers_code() -> None:
    kettle = Evidence("r1", "recent", "Bosch Kettle", {"view": 2}, None, 1.0)
    rain = Evidence("s1", "signal", "weather: rain", {}, None, 1.0)
    plans: dict[PlanKey, list[Tagged] | None] = {
        ("b", 3, ()): [Tagged("kettles for b", [kettle])],
        ("a", 1, ()): [Tagged("kettles for a", [kettle])],
        ("a", 5, ()): [Tagged("kettles again", [kettle])],  # the same user twice: held once
        ("c", 2, ()): [Tagged("kettles for c", [kettle]), Tagged("umbrellas", [rain])],
        ("d", 1, ()): None,  # a failed plan
        ("e", 1, ("rain",)): [Tagged("kettles for e", [kettle])],  # planned with a signal in force
    }
    held = shared_cache(plans)
    assert list(held) == ["bosch kettle"]  # the signal's tag is situational: not shared
    assert [(u, e.tag) for u, e in held["bosch kettle"]] == [("a", "kettles for a"), ("b", "kettles for b")]


LEAD_UP = EnvSignal(
    signal_id="leadup-GB-christmas",
    kind=SignalKind.HOLIDAY_LEADUP,
    text="lead-up to Christmas Day on 25 December (United Kingdom)",
    region="United Kingdom",
    valid_from=T0 + timedelta(minutes=80),
    valid_until=T0 + timedelta(days=20),
    ts=T0,
)


def in_region(events: list[BehaviorEvent], region: str) -> list[BehaviorEvent]:
    return [e.model_copy(update={"region": region}) for e in events]


def kettles_then_gifts(user: str, region: str) -> list[BehaviorEvent]:
    """Kettles for an hour before the lead-up starts; after it, five gift wraps."""
    kettles = [ev(user, m, "kettle", i) for i, m in enumerate(range(0, 60, 6))]
    targets = [ev(user, 110 + m, "gift wrap", 40 + i) for i, m in enumerate(range(5))]
    return in_region(kettles + targets, region)


def test_a_signal_that_comes_into_force_re_plans_the_users_of_its_region_with_it() -> None:
    (case,) = build_cases(kettles_then_gifts("london", "United Kingdom"), users=None)[0]
    with_signal = realtime_of(snapshots(case, batch_path(), signals=[LEAD_UP]))
    assert with_signal is not None
    assert with_signal.trigger == "signal:holiday_leadup"  # re-planned when it came into force
    assert with_signal.requested_at == LEAD_UP.valid_from
    assert [s.text for s in with_signal.signals] == [LEAD_UP.text]
    without = realtime_of(snapshots(case, batch_path()))
    assert without is not None
    assert without.trigger != "signal:holiday_leadup"
    assert without.signals == []
    (lyon,) = build_cases(kettles_then_gifts("lyon", "Lyon"), users=None)[0]
    elsewhere = realtime_of(snapshots(lyon, batch_path(), signals=[LEAD_UP]))
    assert elsewhere is not None
    assert elsewhere.signals == []  # not their region: no signal, no re-plan


class GiftsInSeasonTaggerDouble:
    """Test double: tags the newest category, and "gift wrap" citing the signal when one is
    in force (what a planner that reads the lead-up should do)."""

    async def tags(self, request: ReplanRequest, now: datetime) -> list[Tagged]:
        newest = max(request.recent, key=lambda b: b.ts)
        tags = [
            Tagged((newest.category or "").rsplit(".", 1)[-1], [Evidence("r1", "recent", newest.text, {})])
        ]
        if request.signals:
            signal = Evidence("s1", "signal", f"holiday_leadup: {request.signals[0].text}", {}, None, 1.0)
            tags.insert(0, Tagged("gift wrap", [signal], "Christmas is three weeks away."))
        return tags


async def test_the_signals_effect_is_measured_on_the_users_it_reached_in_one_run() -> None:
    from intentstream.perf.evaluation import signal_report
    from intentstream.perf.replay import LogCalendar

    events = kettles_then_gifts("london", "United Kingdom") + kettles_then_gifts("lyon", "Lyon")
    cases, _ = build_cases(events, users=None)
    scores = await evaluate(
        cases, events, GiftsInSeasonTaggerDouble(), EXACT, k=1, path=batch_path(), signals=[LEAD_UP]
    )
    assert [cases[i].user_id for i in scores.reached] == ["london"]  # Lyon had no signal
    (effect,) = scores.signal_effects
    assert effect["tags_with_signals"] == ["gift wrap", "kettle"]
    assert effect["tags_without_signals"] == ["kettle"]
    assert effect["cites_signal"]
    assert effect["names_signal"]  # "christmas" came from the signal, not the kettles
    assert effect["timeliness_passed"]
    report = signal_report(scores, LogCalendar([LEAD_UP], users_by_region={"United Kingdom": 1}))
    assert report["users_reached"] == 1
    assert report["signals_seen"] == {LEAD_UP.text: 1}
    assert report["alone"]["llm_tags"]["without_signals"]["hr_at_1"] == 0.0
    assert report["alone"]["llm_tags"]["with_signals"]["hr_at_1"] == 1.0
    assert report["plans_using_the_signal"] == 1.0
    assert report["examples"][0]["user"] == "london"


# -- the item level ------------------------------------------------------------------------


def crowd_before(minutes: float) -> list[BehaviorEvent]:
    """Other shoppers before a cut: one browses the sofa the switcher will take, then a
    lamp, many times; many look at one phone (the popular item)."""
    sofa_then_lamp = []
    for n in range(4):
        sofa_then_lamp += [ev("crowd-a", minutes - 30 + 2 * n, "sofa", 40, text="velvet sofa model 40"),
                           ev("crowd-a", minutes - 29 + 2 * n, "lamp", 90 + n)]  # fmt: skip
    phones = [ev(f"crowd-p{n}", minutes - 20 + n / 10, "phone", 7, text="samsung phone") for n in range(30)]
    return [
        e.model_copy(update={"event_id": f"{e.user_id}-{i}"}) for i, e in enumerate(sofa_then_lamp + phones)
    ]


async def test_items_for_the_tags_hit_the_next_item_that_popular_misses() -> None:
    from intentstream.perf.quality import CO_VIEWED, LAST_CATEGORY_POPULAR, POPULAR, item_level

    mine = switcher()
    events = mine + crowd_before(100)
    cases, _ = build_cases(events, users=None)
    cases = [c for c in cases if c.user_id == "switcher"]
    scores = await evaluate(cases, events, LatestCategoryTagger(), EXACT, k=3, path=batch_path())
    found = item_level(cases, events, scores.served, k=1, items_per_tag=3, half_life_s=86_400.0)
    assert found.users_with_new_items == 1  # the next sofas are items the switcher never saw
    assert found.new[REALTIME] == [1]  # "sofa" finds the crowd's sofa 40: the switcher's next item
    assert found.new[POPULAR] == [None]  # the phone everyone looks at goes first: not it
    assert found.new["daily"] == [None]  # nothing a day before: popular only
    assert found.new[LAST_CATEGORY_POPULAR][0] is not None  # sofa is their last category too
    assert CO_VIEWED in found.new
    assert found.catalog_items > 0
    from intentstream.perf.evaluation import item_report

    report = item_report(found, dataset="switcher", users=1, seed=1)
    assert (report["level"], report["hr_at_k_realtime"], report["hr_at_k_popular"]) == ("item", 1.0, 0.0)
    assert {
        "hr_at_k_daily",
        "hr_at_k_co_viewed",
        "hr_at_k_last_category_popular",
        "hr_at_k_record",
        "hr_at_k_record_without_category_popular",
    } <= set(report)
    assert report["including_seen"]["users"] == 1


async def test_the_record_shows_what_others_took_after_the_users_last_item_beside_its_tags_items() -> None:
    from intentstream.perf.quality import (
        CO_VIEWED,
        POPULAR,
        RECORD,
        RECORD_DELAYED,
        RECORD_TAGS_ONLY,
        item_level,
    )

    history = [ev("fan", m, "kettle", i) for i, m in enumerate(range(0, 60, 6))] + [ev("fan", 99, "lamp", 90)]
    targets = [ev("fan", 110 + m, "sofa", 40 + i) for i, m in enumerate(range(5))]
    events = history + targets + crowd_before(100)  # the crowd takes sofa 40 around lamp 90
    cases = [c for c in build_cases(events, users=None)[0] if c.user_id == "fan"]
    scores = await evaluate(cases, events, LatestCategoryTagger(), EXACT, k=3, path=batch_path())
    found = item_level(cases, events, scores.served, k=2, items_per_tag=3, half_life_s=86_400.0)
    assert found.new[CO_VIEWED] == [1]  # sofa 40 came most often with lamp 90
    assert found.new[RECORD_TAGS_ONLY] == [None]  # their tags' items are lamps
    assert found.new[RECORD] == [2]  # a lamp, then the first co-viewed item, as a feed reads it
    # a day before nothing was co-viewed with anything: that record is the popular items
    assert found.new[RECORD_DELAYED + "daily"] == found.new[POPULAR]


async def test_a_record_of_five_minutes_ago_knows_only_the_items_the_user_had_taken_by_then() -> None:
    from intentstream.perf.quality import POPULAR, RECORD, RECORD_DELAYED, item_level

    kettles = [ev("fan", m, "kettle", i) for i, m in enumerate(range(0, 60, 6))]
    history = [*kettles, ev("fan", 108, "lamp", 90)]
    targets = [ev("fan", 110 + m, "sofa", 40 + i) for i, m in enumerate(range(5))]
    tvs = [ev(f"crowd-t{n}", 80 + n / 10, "tv", 1) for n in range(10)]  # popular, so sofa 40 is not
    crowd = crowd_before(100) + [e.model_copy(update={"event_id": f"tv-{i}"}) for i, e in enumerate(tvs)]
    events = history + targets + crowd
    cases = [c for c in build_cases(events, users=None)[0] if c.user_id == "fan"]
    scores = await evaluate(cases, events, LatestCategoryTagger(), EXACT, k=3, path=batch_path())
    found = item_level(cases, events, scores.served, k=2, items_per_tag=3, half_life_s=86_400.0)
    assert found.new[POPULAR] == [None]  # the phone and the tv
    assert found.new[RECORD] == [2]  # at the cut: lamp 90's co-viewed sofa 40
    assert found.new[RECORD_DELAYED + "5min"] == [None]  # 5 minutes before, lamp 90 was not theirs yet


async def test_the_record_shows_the_bestsellers_of_the_users_latest_category_as_a_feed_reads_them() -> None:
    from intentstream.perf.quality import POPULAR, RECORD, RECORD_DELAYED, RECORD_WITHOUT_CATEGORY, item_level

    kettles = [ev("fan", m, "kettle", i) for i, m in enumerate(range(0, 60, 6))]
    history = [*kettles, ev("fan", 99, "lamp", 95)]  # lamp 95: nobody took anything with it
    targets = [ev("fan", 110 + m, "lamp", 96 + m) for m in range(5)]
    crowd = [ev(f"crowd-l{n}", 80 + n, "lamp", 96) for n in range(5)]  # lamp 96: the best-selling lamp
    crowd += [ev(f"crowd-p{n}", 90 + n / 10, "phone", 7) for n in range(30)]  # the phone: popular
    events = history + targets + [e.model_copy(update={"event_id": f"c-{i}"}) for i, e in enumerate(crowd)]
    cases = [c for c in build_cases(events, users=None)[0] if c.user_id == "fan"]
    scores = await evaluate(
        cases, events, FixedTaggerDouble("garden hose"), EXACT, k=3, path=batch_path(), live_tags=0
    )
    found = item_level(cases, events, scores.served, k=1, items_per_tag=3, half_life_s=86_400.0)
    assert found.new[POPULAR] == [None]  # the phone
    assert found.new[RECORD_WITHOUT_CATEGORY] == [None]  # no tag's item, nothing co-viewed: the phone
    assert found.new[RECORD] == [1]  # their latest category's best seller
    assert found.new[RECORD_DELAYED + "daily"] == [None]  # a day before, they had looked at no lamp
