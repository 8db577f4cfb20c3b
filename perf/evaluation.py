"""The shell around perf/quality.py: the real agents on the vLLM server as the tagger, the
JSON report and the picture of HR@K against refresh delay."""

from __future__ import annotations

import asyncio
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from intentstream.agents.arbiter import scorer_for
from intentstream.agents.chain import IntentChain, PlanFailed
from intentstream.agents.embedding import MiniLMEmbedder
from intentstream.agents.evidence import user_view
from intentstream.agents.llm import OpenAICompatibleLLM, wait_until_ready
from intentstream.agents.stage import PlanCost, StageFailed
from intentstream.perf.bench_agents import llm_endpoint
from intentstream.perf.logs import LoadStats, LogFormat, load_events
from intentstream.perf.quality import (
    CO_VIEWED,
    DELAYS,
    EVERY_EVENT,
    ITEM_CUTOFFS,
    LAST_CATEGORY,
    LAST_CATEGORY_POPULAR,
    LIVE,
    LLM_CACHED,
    MIN_HISTORY,
    MODES,
    NEXT_EVENTS,
    POPULAR,
    REALTIME,
    REALTIME_SIGNALS,
    RECORD,
    RECORD_CACHED,
    RECORD_DELAYED,
    RECORD_SIGNALS,
    RECORD_TAGS_ONLY,
    RECORD_WITHOUT_CATEGORY,
    SEED,
    THRESHOLD,
    Case,
    ItemScores,
    Matcher,
    NothingToEvaluate,
    PlanUnavailable,
    Scores,
    Tagged,
    build_cases,
    evaluate,
    hit_rate,
    item_level,
    ndcg,
)
from intentstream.perf.replay import LogCalendar, encoded, log_calendar
from intentstream.progress import say
from intentstream.schemas.events import BehaviorEvent, EnvSignal
from intentstream.schemas.record import ReplanRequest
from intentstream.settings import Settings
from intentstream.signal_sources import SignalSource
from intentstream.stream.batch import BatchPath

CUTOFFS = (1, 3, 5, 10, 30)
LABELS = {
    EVERY_EVENT: "every event",
    REALTIME: "real time\n(trigger)",
    "5min": "5 min",
    "30min": "30 min",
    "1h": "1 h",
    "daily": "1 day",
}


class ChainTagger:
    """Tags from the HMAS chain (planner, experts, arbiter). Explanations do not change the
    tags, so they are not written here; the online judge is left out (see the notes)."""

    def __init__(self, chain: IntentChain) -> None:
        self.chain = chain
        self.cost = PlanCost()

    async def tags(self, request: ReplanRequest, now: datetime) -> list[Tagged]:
        """The chosen tags; explained too when the request carries a signal (the report
        shows whether the explanations use it)."""
        view = user_view(request, now)
        try:
            chosen = await self.chain.choose(view, self.cost)
        except (PlanFailed, StageFailed) as exc:
            raise PlanUnavailable(f"user {request.user_id}: {exc}") from exc
        if request.signals:
            try:
                explained = await self.chain.explainer.explain(chosen, view, self.cost)
            except StageFailed:
                explained = []
            if explained:
                return [Tagged(e.tag, view.pick(e.evidence), e.explanation) for e in explained]
        return [Tagged(p.tag, view.pick(p.evidence)) for p in chosen]


def report(scores: Scores, *, dataset: str, qualified: int, users: int | None, seed: int) -> dict[str, Any]:
    """The JSON report of one evaluation (every figure from ``scores``)."""
    k = scores.k
    hr = {m: round(hit_rate(r, k), 4) for m, r in scores.ranks.items()}
    cutoffs = sorted({c for c in CUTOFFS if c <= k} | {k})
    daily = hr["daily"]
    n = len(scores.ranks[POPULAR])
    return {
        "dataset": dataset,
        "k": k,
        "users_evaluated": n,
        "users_qualified": qualified,
        "sample": {"users": users, "seed": seed} if users is not None and users < qualified else None,
        "hr_at_k_realtime": hr[REALTIME],
        "hr_at_k_daily": daily,
        "hr_at_k_by_delay": {m: hr[m] for m in MODES},
        "hr_at_k_popular": hr[POPULAR],
        "hr_at_k_last_category": hr[LAST_CATEGORY],
        "realtime_over_daily": round(hr[REALTIME] / daily, 3) if daily else None,
        "hr_at_k_every_event": hr[EVERY_EVENT],
        "ndcg_at_k": {m: round(ndcg(r, k), 4) for m, r in scores.ranks.items()},
        "hr_by_cutoff": {
            m: {str(c): round(hit_rate(r, c), 4) for c in cutoffs} for m, r in scores.ranks.items()
        },
        "hr_tags_alone_by_delay": {m: round(hit_rate(scores.tag_ranks[m], k), 4) for m in MODES},
        "two_speeds": two_speeds(scores),
        "users_with_tags_by_delay": {m: scores.users_with_tags.get(m, 0) for m in MODES},
        "plans": scores.plans,
        "plans_failed": scores.plans_failed,
        "why": why(scores),
        "protocol": {
            "next_events": NEXT_EVENTS,
            "min_history": MIN_HISTORY,
            "match_threshold": THRESHOLD,
            "delays": {name: delay.total_seconds() for name, delay in DELAYS},
            "ranking": "the user's tags first, then the most popular categories up to K",
            "hit": "prediction == target's category (case-folded), or embedding cosine >= threshold",
        },
    }


def two_speeds(scores: Scores) -> dict[str, Any]:
    """Who gets the credit at real time: the record as a feed reads it, the LLM's tags alone
    and the live entries (made by code from the user's own events) alone; each with the
    popular fill a feed puts around it, and bare."""
    k = scores.k
    parts = {
        "record": RECORD,
        "llm_tags": REALTIME,
        "live_entries": LIVE,
        "record_with_cache": RECORD_CACHED,
        "llm_tags_with_cache": LLM_CACHED,
    }

    def figures(ranks: list[int | None]) -> dict[str, float]:
        return {f"hr_at_{k}": round(hit_rate(ranks, k), 4), "hr_at_1": round(hit_rate(ranks, 1), 4),
                f"ndcg_at_{k}": round(ndcg(ranks, k), 4)}  # fmt: skip

    return {
        "with_popular_fill": {name: figures(scores.ranks[m]) for name, m in parts.items()},
        "alone": {name: figures(scores.tag_ranks[m]) for name, m in parts.items()},
        "users_with_entries": {name: scores.users_with_tags.get(m, 0) for name, m in parts.items()},
        "record_over_daily": (
            round(hit_rate(scores.ranks[RECORD], k) / hit_rate(scores.ranks["daily"], k), 3)
            if hit_rate(scores.ranks["daily"], k)
            else None
        ),
        "note": (
            "llm_tags are the LLM's alone; live_entries are code's echo of the user's own events; "
            "record is both, as the worker composes them (stream.live.compose) at the cut; "
            "the *_with_cache parts add the shared plan cache, holding what the plans of the other "
            "evaluated users made for each interest (llm_tags_with_cache: this user's LLM tags and "
            "those cache entries, no live ones)"
        ),
    }


def why(scores: Scores) -> dict[str, Any]:
    """What explains real time's hits and misses: how far behind the trigger left its plan,
    and the users where repeating the last category beat the tags."""
    details = scores.details
    behind = [d["events_after_realtime_plan"] for d in details]
    beaten = [d for d in details if d["last_category_hit"] and not d["realtime_tags_hit"]]
    return {
        "events_after_realtime_plan_mean": round(sum(behind) / max(1, len(behind)), 2),
        "users_whose_realtime_plan_saw_every_event": sum(1 for b in behind if b == 0),
        "next_events_all_in_last_category": sum(
            1 for d in details if set(d["next_categories"]) == {d["last_category"]}
        ),
        "last_category_hit_but_tags_missed": len(beaten),
        "examples": beaten[:8],
    }


def plot(result: dict[str, Any], path: Path) -> Path:
    """HR@K against refresh delay, with the two baselines as lines across."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = result["k"]
    xs = list(range(len(MODES)))
    fig, ax = plt.subplots(figsize=(7.5, 4.6), dpi=120)
    ax.plot(
        xs,
        [result["hr_at_k_by_delay"][m] for m in MODES],
        "o-",
        lw=2,
        label=f"LLM tags, popular fill (HR@{k})",
    )
    ax.plot(
        xs,
        [result["hr_tags_alone_by_delay"][m] for m in MODES],
        "s--",
        color="tab:green",
        label=f"LLM tags alone, no popular fill (HR@{k})",
    )
    speeds = result.get("two_speeds")
    if speeds:  # the record as a feed reads it, at real time: who made what is in the legend
        at = MODES.index(REALTIME)
        for part, marker, colour, label in (
            ("record", "*", "tab:red", "record at real time: LLM tags + live entries (code)"),
            ("record_with_cache", "P", "tab:purple", "record with the shared plan cache"),
            ("live_entries", "x", "tab:brown", "live entries alone (code, no LLM)"),
        ):
            ax.plot([at], [speeds["with_popular_fill"][part][f"hr_at_{k}"]], marker, ms=11, color=colour,
                    label=f"{label} (HR@{k})")  # fmt: skip
    ax.axhline(result["hr_at_k_popular"], color="grey", ls=":", label="most popular categories")
    ax.axhline(
        result["hr_at_k_last_category"], color="tab:orange", ls="-.", label="last category, then popular"
    )
    ax.set_xticks(xs, [LABELS[m] for m in MODES])
    ax.set_xlabel("refresh delay (tags planned from the context this long before)")
    ax.set_ylabel(f"HR@{k}")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(
        f"{result['dataset']}: {result['users_evaluated']} users, next {NEXT_EVENTS} events", fontsize=10
    )
    fig.text(
        0.01, 0.01, f"{result['machine']}; model {result['model']}; matcher {result['embedder']}", fontsize=7
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def run_eval(
    settings: Settings,
    log: Path,
    fmt: LogFormat,
    *,
    k: int,
    users: int | None,
    seed: int = SEED,
    plot_dir: Path | None = None,
    signals: SignalSource = "none",
    level: Level = "category",
) -> dict[str, Any]:
    """Evaluate on ``log`` with the real agents; write the plot when ``plot_dir`` is given.
    With ``signals="holidays"``, real time is also planned with the holiday signals of each
    user's country (the log's calendar, as ``replay --signals holidays`` publishes it)."""
    stats = LoadStats()
    events = list(load_events(log, fmt, stats))
    calendar = events_calendar(events) if signals == "holidays" else None
    cases, qualified = build_cases(events, users=users, seed=seed)
    if not cases:
        raise NothingToEvaluate(
            f"{log}: no user has {MIN_HISTORY + NEXT_EVENTS} described events "
            f"({stats.events} events read, {sum(stats.skipped.values())} rows skipped)"
        )
    say(f"evaluating {len(cases)} of {qualified} qualifying users (seed {seed}) from {stats.events} events")
    embedder = MiniLMEmbedder()
    started = time.perf_counter()
    with llm_endpoint(settings) as (base_url, _):
        scores, cost = asyncio.run(
            _score(settings, base_url, cases, events, embedder, k, calendar.signals if calendar else [])
        )
    wall = time.perf_counter() - started
    scores.check(f"is the LLM server at {base_url} answering?")
    result = report(
        scores, dataset=f"{log.parent.name}/{log.name}", qualified=qualified, users=users, seed=seed
    )
    planned = max(1, scores.plans)
    result.update(
        {
            "prompt_tokens_per_plan": round(cost.prompt_tokens / planned),
            "generated_tokens_per_plan": round(cost.completion_tokens / planned),
            "wall_s": round(wall, 1),
            "events_read": stats.events,
            "rows_skipped": dict(stats.skipped),
            "model": settings.llm_model_name,
            "embedder": embedder.name,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU vLLM",
            "notes": (
                "Tags come from the planner, experts and arbiter on the served model; the explainer "
                "(it does not change tags) and the online judge are left out, so a plan the judge "
                "would turn down still counts. Real time ignores the LLM's own latency."
            ),
        }
    )
    if calendar is not None:
        result["signals"] = signal_report(scores, calendar)
    if plot_dir is not None:  # the category-level picture (the item level is in the JSON)
        result["plot"] = str(plot(result, plot_dir / f"eval-{log.stem if fmt == 'jsonl' else fmt}.png"))
    if level == "item":
        found = item_level(
            cases, events, scores.served, k=k, items_per_tag=settings.catalog_items_per_tag,
            half_life_s=settings.catalog_half_life_s,
        )  # fmt: skip
        category_level = result
        result = item_report(found, dataset=category_level["dataset"], users=len(cases), seed=seed)
        result["category_level"] = category_level
    return result


Level = Literal["category", "item"]


def item_report(found: ItemScores, *, dataset: str, users: int, seed: int) -> dict[str, Any]:
    """The item-level report: the category report's names (``hr_at_k_realtime`` and the rest,
    now on items) with the item baselines beside them, excluding the items each user had seen
    before the cut, and the same including them (``including_seen``)."""
    k = found.k

    def figures(ranks: dict[str, list[int | None]]) -> dict[str, Any]:
        hr = {m: round(hit_rate(r, k), 4) for m, r in ranks.items()}
        daily = hr.get("daily", 0.0)
        record_daily = hr.get(RECORD_DELAYED + "daily", 0.0)
        return {
            "users": len(ranks.get(POPULAR, [])),
            "hr_at_k_realtime": hr[REALTIME],
            "hr_at_k_record": hr[RECORD],
            "hr_at_k_daily": daily,
            "hr_at_k_by_delay": {m: hr[m] for m in MODES},
            "hr_at_k_popular": hr[POPULAR],
            "hr_at_k_co_viewed": hr[CO_VIEWED],
            "hr_at_k_last_category_popular": hr[LAST_CATEGORY_POPULAR],
            "hr_at_k_record_tags_only": hr[RECORD_TAGS_ONLY],
            "hr_at_k_record_without_category_popular": hr[RECORD_WITHOUT_CATEGORY],
            "hr_at_k_record_by_delay": {"realtime": hr[RECORD]}
            | {m: hr[RECORD_DELAYED + m] for m in MODES if RECORD_DELAYED + m in hr},
            "hr_at_k_live": hr[LIVE],
            "realtime_over_daily": round(hr[REALTIME] / daily, 3) if daily else None,
            "record_over_daily": round(hr[RECORD] / daily, 3) if daily else None,
            "record_over_daily_record": round(hr[RECORD] / record_daily, 3) if record_daily else None,
            "ndcg_at_k": {m: round(ndcg(r, k), 4) for m, r in ranks.items()},
            "hr_by_cutoff": {
                m: {str(c): round(hit_rate(r, c), 4) for c in sorted({*ITEM_CUTOFFS, k}) if c <= k}
                for m, r in ranks.items()
            },
            "ndcg_by_cutoff": {
                m: {str(c): round(ndcg(r, c), 4) for c in sorted({*ITEM_CUTOFFS, k}) if c <= k}
                for m, r in ranks.items()
            },
        }

    return {
        "dataset": dataset,
        "level": "item",
        "k": k,
        "users_evaluated": users,
        "seed": seed,
        "users_with_new_items_next": found.users_with_new_items,
        "catalog_items_at_the_last_cut": found.catalog_items,
        **figures(found.new),
        "including_seen": figures(found.seen_too),
        "protocol": {
            "targets": "the item ids of the user's next 5 described events",
            "excluding_seen": "items the user touched before the cut are neither candidates nor hits "
            "(users whose next items were all seen before are left out); including_seen keeps them",
            "predictions": "each tag's catalog items (stream.catalog.Catalog.candidates, as the worker "
            "writes them), tags in turn by rank (schemas.record.interleave, as the reader serves them), "
            "then the most popular items up to K",
            "realtime": "the real-time LLM tags' items; daily and the other delays: the LLM tags planned "
            "that long before the cut, their items looked up then",
            "record": "the record at real time as a feed reads it (schemas.record.feed_items, what "
            "IntentReader.items serves): its tags' items (LLM tags and live entries, as the worker "
            "composes it) in turn with the items co-viewed with the user's last 3 items "
            "(stream.catalog.Catalog.co_viewed) and the most popular items of the category the user "
            "last looked at (stream.catalog.Catalog.bestsellers), as the worker writes them; "
            "record_tags_only: the tags' items alone; record_without_category_popular: without the "
            "category's items; record_by_delay: a record that old, all three parts as of then (the "
            "fair daily refresh for the record)",
            "baselines": "popular: catalog popularity decayed in event time; co_viewed: the co-viewed "
            "items alone (each item paired with the previous 3 distinct items of anyone's history "
            "before the cut, 16 partners kept per item); "
            "last_category_popular: the most popular items of the user's last category",
        },
    }


def events_calendar(events: Sequence[BehaviorEvent]) -> LogCalendar:
    """The holiday calendar of a log held in memory: the one ``replay --signals holidays``
    publishes for it (``perf.replay.log_calendar``)."""
    return log_calendar(encoded(events))


def signal_report(scores: Scores, calendar: LogCalendar) -> dict[str, Any]:
    """Real time with and without the signals, over the users a signal reached (their
    real-time plan carried one), in the same run; what they saw; what the signals did."""
    k = scores.k
    reached = scores.reached
    effects = scores.signal_effects

    def over_reached(mode: str, ranks: dict[str, list[int | None]]) -> dict[str, float]:
        chosen = [ranks[mode][i] for i in reached]
        return {f"hr_at_{k}": round(hit_rate(chosen, k), 4), f"ndcg_at_{k}": round(ndcg(chosen, k), 4),
                "hr_at_1": round(hit_rate(chosen, 1), 4)}  # fmt: skip

    pairs = {"llm_tags": (REALTIME, REALTIME_SIGNALS), "record": (RECORD, RECORD_SIGNALS)}
    n = max(1, len(effects))
    changed = [e for e in effects if e["tags_changed"]]
    return {
        "calendar": calendar.summary(),
        "users_reached": len(reached),
        "signals_seen": dict(Counter(t for e in effects for t in e["signals"]).most_common()),
        "with_popular_fill": {
            name: {
                "without_signals": over_reached(a, scores.ranks),
                "with_signals": over_reached(b, scores.ranks),
            }
            for name, (a, b) in pairs.items()
        },
        "alone": {
            name: {
                "without_signals": over_reached(a, scores.tag_ranks),
                "with_signals": over_reached(b, scores.tag_ranks),
            }
            for name, (a, b) in pairs.items()
        },
        "plans_whose_tags_changed": round(len(changed) / n, 4),
        "plans_citing_a_signal": round(sum(e["cites_signal"] for e in effects) / n, 4),
        "plans_naming_what_only_the_signal_brought": round(sum(e["names_signal"] for e in effects) / n, 4),
        "plans_using_the_signal": round(sum(e["cites_signal"] or e["names_signal"] for e in effects) / n, 4),
        "timeliness_passed": round(sum(e["timeliness_passed"] for e in effects) / n, 4),
        "examples": [e for e in changed if e["cites_signal"] or e["names_signal"]][:5] or changed[:5],
        "note": (
            "users_reached: evaluated users whose real-time plan, walked with the signals of their "
            "region (a signal re-plans its users when it comes into force), carried at least one; "
            "with_signals and without_signals are the same users and the same run. A plan uses the "
            "signal when a tag cites it as evidence or a tag or explanation names a word only the "
            "signal brought (not in the user's behaviour or region). timeliness_passed is the "
            "judge's own check in code (agents.judge.check_timeliness)."
        ),
    }


async def _score(
    settings: Settings,
    base_url: str,
    cases: list[Case],
    events: list[BehaviorEvent],
    embedder: MiniLMEmbedder,
    k: int,
    signals: Sequence[EnvSignal] = (),
) -> tuple[Scores, PlanCost]:
    await wait_until_ready(base_url, 120)
    llm = OpenAICompatibleLLM(base_url, settings.llm_model_name, concurrency=settings.llm_concurrency)
    chain = IntentChain(
        llm,
        embedder,
        max_tags=settings.tags_per_user,
        retries=settings.llm_max_retries,
        judge=False,
        scorer=scorer_for(embedder, settings.scorer_sharpness, settings.kernel_backend),
    )
    tagger = ChainTagger(chain)
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        left = (time.monotonic() - started) / done * (total - done)
        print(
            f"\r  plans {done}/{total} (about {left / 60:.0f} min left)", end="", file=sys.stderr, flush=True
        )

    try:
        scores = await evaluate(
            cases,
            events,
            tagger,
            Matcher(embedder),
            k=k,
            path=BatchPath.from_settings(settings),
            concurrency=settings.llm_concurrency,
            sweep_s=settings.replan_sweep_interval_s,
            live_tags=settings.live_tags,
            progress=progress,
            signals=signals,
        )
    finally:
        print(file=sys.stderr)
        await llm.aclose()
    return scores, tagger.cost
